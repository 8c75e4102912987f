"""Context leaks: spans recorded under the wrong parent.

A long-lived listener, timer, pool callback or thread captures the context that was active when
it was *set up*, and every later unit of work it runs lands under that one span. The spans say
so in a few ways, each weighed as a log-likelihood ratio (docs/leaks.md has the model and the
reasons for each weight):

* **late**: the child started after its parent had ended;
* **repeated**: that parent has several late children of the same name, arriving over a time
  that dwarfs the parent and their own work (a timer tick, a stream of messages, not a batch);
* **unusual fan-out**: other spans of the parent's name (its peers) have far fewer children of
  that name; where the peers have as many, the pattern is the app's normal shape, not a leak;
* **nested same name**: a span of name X under another X that had ended (a handler under a
  handler, a poll under the previous poll), more so in a chain;
* **extent**: the trace lasts far longer than its root.

Only children in the parent's own SDK (same resource, parent not recorded as remote) are
suspects: context captured by a listener never crosses a process by itself, and a remote parent
was propagated on purpose (a message consumer under its producer is the intended shape).

The likely parent of a leaked span is the span its work really came from, among the spans running
in the same process when it started: the caller that waited for it (it ends just after the work)
or, for work handed off, the span acting at that instant. It is named only when the leaked spans
of one group consistently find a dispatcher of one name that way; otherwise it is ``None`` (the
work should have been a root: a timer's ticks, a background loop).
"""

from __future__ import annotations

import enum
import math
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import pairwise
from operator import attrgetter

import msgspec

from ctxdoctor.diagnose.traces import NAME, Slice, flag, index, named, subset, traces
from ctxdoctor.findings import Leak
from ctxdoctor.fixes import leak_fix
from ctxdoctor.model import Span, SpanKind

MS = 1_000_000  # nanoseconds


class LeakParams(msgspec.Struct, frozen=True):
    """Every hand-set literal of the leak model, named (docs/leaks.md says why each value)."""

    #: Log-odds before any evidence: most child spans are where they belong.
    prior: float = -5.0
    #: A child that starts after its parent ended (deferred work does this too, once).
    w_late: float = 2.0
    #: Per doubling of the late children of one name under one parent, capped at ``repeat_cap``.
    w_repeat: float = 1.0
    repeat_cap: float = 3.0
    #: The late children's starts spread over ``spread_ratio`` times the parent's duration or a
    #: child's typical duration (the longer): a stream (ticks, messages), not a batch dispatched
    #: at one moment, however late the event loop ran it.
    w_spread: float = 2.0
    spread_ratio: float = 4.0
    #: Late children bunched together (a batch run at once or back to back, not a stream).
    w_bunched: float = -2.0
    #: Per doubling of the fan-out over what the parent's peers typically have, capped.
    w_fanout: float = 1.0
    fanout_cap: float = 3.0
    #: The peers typically have as many: the app's normal shape (not applied to same-name nesting).
    w_typical: float = -3.0
    #: Peers needed before their typical fan-out counts as evidence.
    min_peers: int = 3
    #: X under an X that had ended; and a chain of at least ``chain_min`` such.
    w_nested: float = 3.0
    w_chain: float = 2.0
    chain_min: int = 3
    #: The trace lasts ``extent_ratio`` times its root's duration or more.
    w_extent: float = 1.0
    extent_ratio: float = 10.0
    #: Start after the parent's end by at least this much to count as late (clock jitter).
    late_grace_ns: int = 1 * MS
    #: Reported when the confidence is at least this (the value bench/accuracy_leaks.py tunes to,
    #: held out; ``--min-confidence`` applies on top).
    threshold: float = 0.7
    #: Share of a group's leaked spans that must find a dispatcher of one name to name it.
    parent_consistency: float = 0.6
    #: A group whose starts are this regular (median deviation of the gaps between them over
    #: their median) is a timer's ticks: they should be roots, whatever happened to be running.
    periodic_cv: float = 0.25
    periodic_min: int = 4
    #: Gaps shorter than this cannot show regularity: with a millisecond clock (Node.js) a 25%
    #: deviation needs gaps of at least 4 ms to be seen at all.
    periodic_min_gap_ns: int = 4 * MS
    #: A running span that ends within this share of the leaked span's duration (at least
    #: ``late_grace_ns``) of its end waited for that work: it is where the work came from.
    waited_share: float = 0.05
    #: A group's callers waited for its work when their ends typically (the median) fall within
    #: this share of the work's duration of its end: the evidence then outranks the rest.
    waited_fit: float = 0.25


DEFAULT = LeakParams()


class LeakCandidate(msgspec.Struct, frozen=True, gc=False):
    """One child with the facts the evidence is computed from (exposed for the unit tests)."""

    span: Span
    parent: Span
    late: bool
    same_name_late: int  # late children of this name under this parent
    siblings: int  # children of this name under this parent
    spread: float  # (last late start - first late start) / max(parent duration, late children's median)
    chain: int  # same-name ancestors in a row, each ended before its child started
    extent_ratio: float  # trace extent / root duration (0 when the root is not here)
    peers: int  # other spans of the parent's service and name
    typical: float  # their median count of children of this name


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def score(c: LeakCandidate, p: LeakParams = DEFAULT) -> tuple[float, list[str]]:
    """Log-odds that ``c.span`` is under the wrong parent, and the evidence in words."""
    logit = p.prior
    why: list[str] = []
    parent = c.parent
    nested = c.late and c.span.name == parent.name
    if c.late:
        logit += p.w_late
        why.append(f"started {(c.span.start - parent.end) / MS:.1f} ms after its parent {parent.name!r} ended")
    if c.late and c.same_name_late >= 2:
        logit += p.w_repeat * min(math.log2(c.same_name_late), p.repeat_cap)
        why.append(f"{c.same_name_late} {c.span.name!r} spans started under that {parent.name!r} after it ended")
        if c.spread >= p.spread_ratio:
            logit += p.w_spread
            why.append(
                f"their starts spread over {c.spread:.0f}x the parent's (or their own) duration: a stream, not a batch"
            )
        else:
            logit += p.w_bunched
    if c.peers >= p.min_peers and not nested:
        if c.siblings <= c.typical:
            logit += p.w_typical
        else:
            excess = c.siblings / max(c.typical, 1.0)
            if excess > 1:
                logit += p.w_fanout * min(math.log2(excess), p.fanout_cap)
                why.append(
                    f"this {parent.name!r} has {c.siblings} {c.span.name!r} children; its {c.peers} peers "
                    f"typically have {c.typical:g}"
                )
    if nested:
        logit += p.w_nested
        why.append(f"a {c.span.name!r} under another {parent.name!r} that had already ended")
        if c.chain >= p.chain_min:
            logit += p.w_chain
            why.append(f"a chain of {c.chain} such nested {c.span.name!r} spans")
    if c.extent_ratio >= p.extent_ratio:
        logit += p.w_extent
        why.append(f"the trace lasts {c.extent_ratio:.0f}x as long as its root")
    return logit, why


def _median(values: list[int]) -> float:
    values.sort()
    n = len(values)
    return float(values[n // 2]) if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def _local_child(child: Span, parent: Span) -> bool:
    return child.unit.resource == parent.unit.resource and child.parent_remote is not True


class LateChildren:
    """The traces with a child that starts after its parent ended (``traces.Filter``).

    Only those hold candidates; in a healthy dump there are none or few, and the walk over the
    traces (a sort, a dict per trace) is skipped for all the others.
    """

    def __init__(self, p: LeakParams = DEFAULT) -> None:
        # ``flag`` hands over the children that started after their parent ended: a grace below
        # zero would ask for children that started before.
        if p.late_grace_ns < 0:
            raise ValueError("late_grace_ns must not be negative")
        self.p = p
        self.traces: set[int] = set()
        self.unsettled: set[int] = set()

    def __call__(self, found: Slice) -> None:
        grace = self.p.late_grace_ns
        self.traces.update([c.trace_id for c, q in found.late if c.start > q.end + grace])


def candidates(
    spans: Sequence[Span],
    p: LeakParams = DEFAULT,
    *,
    late_children: LateChildren | None = None,
    ordered: list[Span] | None = None,
) -> list[LeakCandidate]:
    """Children worth scoring: those that started after their parent ended.

    Two walks over the traces (``traces.py``): the first, over the traces ``late_children`` kept (run
    here when not given), finds the late children and their groups; the second tallies, only
    for the parent names those groups have, how many children of that name each peer has, over
    the traces that hold spans of those names. A healthy dump has few late children, so both
    walks are mostly skipped. ``ordered``: the spans of ``late_children.traces`` in trace order
    (``subset``), when the caller has picked them.
    """
    if late_children is None:
        late_children = LateChildren(p)
        flag(spans, late_children)
    if late_children.p != p:
        raise ValueError("the late-children filter was made with other parameters")
    if ordered is None:
        ordered = subset(spans, late_children.traces)
    raw: list[tuple[Span, Span, int, int, float, int, float]] = []
    for trace in traces(ordered):
        by_id = index(trace)
        late: dict[tuple[int, str], list[Span]] = defaultdict(list)
        for c in trace:
            parent = by_id.get(c.parent_span_id)
            # Only late children are suspects: a child that starts while its parent runs was most
            # likely started by it.
            if parent is not None and c.start > parent.end + p.late_grace_ns and _local_child(c, parent):
                late[(parent.span_id, c.name)].append(c)
        if not late:
            continue
        root = next((s for s in trace if s.parent_span_id == 0), None)
        extent = max(s.end for s in trace) - min(s.start for s in trace)
        extent_ratio = extent / max(root.duration, MS) if root is not None else 0.0
        for (pid, name), group in late.items():
            parent = by_id[pid]
            siblings = sum(1 for c in trace if c.parent_span_id == pid and c.name == name and _local_child(c, parent))
            starts = [c.start for c in group]
            median_duration = sorted(c.duration for c in group)[len(group) // 2]
            spread = (max(starts) - min(starts)) / max(parent.duration, median_duration, MS)
            for c in group:
                chain = 0
                if c.name == parent.name:
                    chain, cur, up = 1, parent, by_id.get(parent.parent_span_id)
                    while up is not None and up.name == cur.name and cur.start > up.end:
                        chain += 1
                        cur, up = up, by_id.get(up.parent_span_id)
                raw.append((c, parent, len(group), siblings, spread, chain, extent_ratio))
    if not raw:
        return []
    # Peers: every span of the parent's service and name, and its children of the child's name.
    wanted: dict[tuple[str, str], set[str]] = defaultdict(set)
    for c, parent, *_ in raw:
        wanted[(parent.unit.service, parent.name)].add(c.name)
    names = {name for _, name in wanted}
    parents_by_name: Counter[tuple[str, str]] = Counter()
    fanouts: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    of_names = [s for s in named(spans, names) if (s.unit.service, s.name) in wanted]
    for s in of_names:
        parents_by_name[(s.unit.service, s.name)] += 1
    ordered = subset(spans, {s.trace_id for s in of_names})
    for trace in traces(ordered):
        if names.isdisjoint(map(NAME, trace)):
            continue
        here = [s for s in trace if s.name in names and (s.unit.service, s.name) in wanted]
        if not here:
            continue
        tally = Counter((c.parent_span_id, c.name) for c in trace)
        for s in here:
            key = (s.unit.service, s.name)
            for child in wanted[key]:
                n = tally.get((s.span_id, child), 0)
                if n:
                    fanouts[(key[0], key[1], child)].append(n)
    out = []
    for c, parent, n_late, siblings, spread, chain, extent_ratio in raw:
        key = (parent.unit.service, parent.name)
        peers = parents_by_name[key] - 1
        counts = list(fanouts[(key[0], key[1], c.name)])
        if siblings in counts:
            counts.remove(siblings)
        counts += [0] * max(0, peers - len(counts))
        typical = _median(counts) if counts else 0.0
        out.append(LeakCandidate(c, parent, True, n_late, siblings, spread, chain, extent_ratio, peers, typical))
    return out


class _ActiveIndex:
    """Spans of each resource by start time, to find what was running when a leaked span began."""

    def __init__(self, spans: Sequence[Span], resources: set[int]) -> None:
        by_res: dict[int, list[Span]] = defaultdict(list)
        #: What each span did and when (its start and end, its children's starts and ends): a span
        #: that acted at the instant some work began was executing then, not merely open.
        self.acts: dict[int, list[int]] = defaultdict(list)
        for s in spans:
            if s.unit.resource in resources:
                if s.parent_span_id:
                    self.acts[s.parent_span_id] += (s.start, s.end)
                self.acts[s.span_id] += (s.start, s.end)
                if s.kind != SpanKind.CLIENT:
                    by_res[s.unit.resource].append(s)
        self._by_res = {r: sorted(v, key=attrgetter("start")) for r, v in by_res.items()}
        self._starts = {r: [s.start for s in v] for r, v in self._by_res.items()}
        self._longest = {r: max((s.duration for s in v), default=0) for r, v in self._by_res.items()}

    def running(self, leaked: Span, excluded: set[int]) -> list[Span]:
        """The spans (not themselves leaked) in the same resource running when ``leaked`` began:
        where its work may have come from. The same trace counts too: the first event of a
        leaking listener may come from the very request that subscribed it."""
        r = leaked.unit.resource
        spans, starts = self._by_res.get(r, []), self._starts.get(r, [])
        lo = bisect_left(starts, leaked.start - self._longest.get(r, 0))
        hi = bisect_right(starts, leaked.start)
        return [
            s
            for s in spans[lo:hi]
            if s.end >= leaked.start and s.span_id not in excluded and s.parent_span_id != leaked.span_id
        ]


class _Way(enum.Enum):
    """How work reaches a callback, which decides which running span it came from."""

    #: The caller waits for the work (awaits a query's callback, a pooled job): it ends just after
    #: the work does, and of a chain of waiting callers the innermost (latest-started) is the one.
    WAITED = "waited"
    #: The work was handed off (an event emitted synchronously, a task queued) and the caller went
    #: on: the running span that was *executing* when the work began, the one whose own activity
    #: (its start or end, a child's start or end) is nearest that instant. An open span that was only
    #: waiting elsewhere (another request) did nothing then. Ties (clocks with a millisecond's
    #: resolution) go to the innermost: the latest-started, then the one that ends first.
    HANDED_OFF = "handed off"


def _nearest_act(acts: list[int], t: int) -> int:
    return min((abs(a - t) for a in acts), default=1 << 62)


def _pick(
    leaked: Span,
    running: list[Span],
    way: _Way,
    tolerance_ns: int,
    acts: dict[int, list[int]],
    name: str | None = None,
) -> Span | None:
    """The running span ``leaked``'s work came from, the given way; of the given name if any.

    Without a name (a member's vote), a waited-for caller must have ended within
    ``tolerance_ns`` of the work; with the group's agreed name, the one of that name that ended
    nearest (a millisecond clock can put the caller's end a little before the work's).
    """
    if way is _Way.HANDED_OFF:
        pool = running if name is None else [s for s in running if s.name == name]
        return min(pool, key=lambda s: (_nearest_act(acts[s.span_id], leaked.start), -s.start, s.end), default=None)
    if name is None:
        waited = [s for s in running if abs(s.end - leaked.end) <= tolerance_ns]
        return max(waited, key=lambda s: (s.start, -abs(s.end - leaked.end)), default=None)
    named = [s for s in running if s.name == name]
    return min(named, key=lambda s: (abs(s.end - leaked.end), -s.start), default=None)


def periodic_cv(starts: list[int], min_gap_ns: int = 0) -> float | None:
    """How irregular the gaps between consecutive starts are: the median absolute deviation of
    the gaps over their median (robust: a timer delayed once by a busy event loop stays regular).
    None when there are too few starts to tell, or when the median gap is under ``min_gap_ns``
    (gaps of a clock tick or two look regular whatever spaced them)."""
    starts = sorted(starts)
    gaps = sorted(b - a for a, b in pairwise(starts))
    if len(gaps) < 2:
        return None
    mid = gaps[len(gaps) // 2]
    if mid <= 0 or mid < min_gap_ns:
        return None
    dev = sorted(abs(g - mid) for g in gaps)
    return dev[len(dev) // 2] / mid


def find_leaks(
    spans: Sequence[Span],
    p: LeakParams = DEFAULT,
    *,
    late_children: LateChildren | None = None,
    ordered: list[Span] | None = None,
) -> list[Leak]:
    """Spans under the wrong parent, most confident first. ``late_children``: the traces with
    late children, when the caller has run that filter with others (``traces.flag``);
    ``ordered``: their spans in trace order, when the caller has picked them."""
    flagged: list[tuple[LeakCandidate, float, list[str]]] = []
    for c in candidates(spans, p, late_children=late_children, ordered=ordered):
        logit, why = score(c, p)
        conf = _sigmoid(logit)
        if conf >= p.threshold:
            flagged.append((c, conf, why))
    if not flagged:
        return []
    leaked_ids = {c.span.span_id for c, _, _ in flagged}
    index = _ActiveIndex(spans, {c.span.unit.resource for c, _, _ in flagged})
    running = {c.span.span_id: index.running(c.span, leaked_ids) for c, _, _ in flagged}
    # One group per (trace of the wrong parent, child name): what a captured context runs lands in
    # that one trace, under one span or under each other (a re-armed timer's chain of ticks).
    # Which way the work reached its callback is the group's, not each span's, and the evidence is
    # weighed strongest first: callers that waited (ends that coincide, member after member, are
    # no accident), then a timer's regular ticks (roots), then the spans acting when the work
    # began. A way names a dispatcher only when at least ``parent_consistency`` of the members
    # agree on its name.
    groups: dict[tuple[int, str], list[LeakCandidate]] = defaultdict(list)
    for c, _, _ in flagged:
        groups[(c.parent.trace_id, c.span.name)].append(c)

    def agreement(group: list[LeakCandidate], way: _Way) -> tuple[str | None, int, float]:
        """The name most members' picks have, how many, and how tightly the picks fit: the median
        gap between the ends (waited) or between the start and the pick's act (handed off), over
        the leaked span's duration."""
        names: Counter[str] = Counter()
        gaps: dict[str, list[float]] = defaultdict(list)
        for c in group:
            got = _pick(c.span, running[c.span.span_id], way, _tolerance(c.span, p), index.acts)
            if got is not None:
                names[got.name] += 1
                fit = (
                    abs(got.end - c.span.end)
                    if way is _Way.WAITED
                    else _nearest_act(index.acts[got.span_id], c.span.start)
                )
                gaps[got.name].append(fit / max(c.span.duration, 1))
        best = names.most_common(1)
        if not best:
            return None, 0, math.inf
        name, n = best[0]
        fits = sorted(gaps[name])
        return name, n, fits[n // 2]

    agreed: dict[tuple[int, str], tuple[str, _Way] | None] = {}
    ticking: dict[tuple[int, str], float] = {}
    for key, group in groups.items():
        enough = p.parent_consistency * len(group)
        w_name, w_n, w_fit = agreement(group, _Way.WAITED)
        h_name, h_n, _ = agreement(group, _Way.HANDED_OFF)
        # Callers that typically end within ``waited_fit`` of the work's length after it decide.
        if w_name is not None and w_n >= enough and w_fit <= p.waited_fit:
            agreed[key] = (w_name, _Way.WAITED)
            continue
        cv = periodic_cv([c.span.start for c in group], p.periodic_min_gap_ns) if len(group) >= p.periodic_min else None
        if cv is not None and cv <= p.periodic_cv:
            ticking[key] = cv
            agreed[key] = None
        elif h_name is not None and h_n >= enough:
            agreed[key] = (h_name, _Way.HANDED_OFF)
        elif w_name is not None and w_n >= enough:
            agreed[key] = (w_name, _Way.WAITED)
        else:
            agreed[key] = None
    out = []
    for c, conf, why in flagged:
        key = (c.parent.trace_id, c.span.name)
        choice = agreed[key]
        likely = None
        if choice is not None:
            likely = _pick(c.span, running[c.span.span_id], choice[1], _tolerance(c.span, p), index.acts, choice[0])
        cv = ticking.get(key)
        if likely is not None and choice is not None:
            how = (
                "which ended just after it: it waited for the work"
                if choice[1] is _Way.WAITED
                else "the span acting at that instant"
            )
            why = [*why, f"it started inside {likely.name!r}, {how}, as most of its group did"]
        elif cv is not None:
            why = [
                *why,
                f"they start at regular intervals (gaps vary by {cv:.0%}): a timer's ticks, which should be roots",
            ]
        elif choice is not None:
            why = [*why, f"no {choice[0]!r} was running when it started (most of its group started inside one)"]
        else:
            why = [*why, "no span of one name was running where these started: they should be roots"]
        out.append(Leak(c.span, c.parent, likely, conf, tuple(why), leak_fix(c.span.unit.language)))
    out.sort(key=lambda lk: (-lk.confidence, lk.span.start))
    return out


def _tolerance(leaked: Span, p: LeakParams) -> int:
    return max(p.late_grace_ns, int(p.waited_share * leaked.duration))
