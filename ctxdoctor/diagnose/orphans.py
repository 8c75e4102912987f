"""Context-loss roots: root spans that were most likely dispatched from a span of another trace.

The question for each root R is whether it is a legitimate root (an incoming request, a timer,
start-up work) that merely *happens* to start while other traces are busy, or work handed over
from one of those busy spans whose context did not cross the boundary. Timing alone can make
any root look dispatched on a busy service, so the evidence is weighed against chance:

* **Which roots are suspects.** SERVER/CONSUMER roots are entry points and roots that carry links
  were deliberately started as new traces; neither is a suspect.
* **Candidates.** For a suspect R, every other trace that has a span active at R.start in a
  related unit (same process, a parent/child process, or the same service on the same host)
  offers its innermost active span as a candidate parent P.
* **Per candidate, a likelihood ratio** of "P dispatched R" against "R started inside P by
  chance" from: the dispatch lag (R.start after the latest event of P's trace, against the
  event rate of that trace), containment (R ending inside P) and how close R's end is to P's end
  (a dispatcher that waits for its work ends right after it); a chance root lands uniformly.
* **Recurrence against chance, per group of roots with the same service and name.** A small EM
  estimates the share of the group that is dispatched, the parent span name it is dispatched
  from, and the typical lags, so that consistent weak evidence over many roots adds up while a
  periodic job that overlaps requests only as often as their duty cycle predicts does not.
  A candidate of name X counts ``1 / duty(X)`` more because under chance an X is active only
  that share of the time.
* **Ambiguity.** With m candidates of the group's parent name active, each gets ``1/m`` of the
  prior; the parent confidence is the posterior share of the named parent.
"""

from __future__ import annotations

import functools
import math
import re
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from itertools import pairwise
from operator import attrgetter

import msgspec

from ctxdoctor.diagnose.shared_values import find_links, with_links
from ctxdoctor.findings import Orphan
from ctxdoctor.model import ENTRY_KINDS, Span, Unit
from ctxdoctor.units import Boundary, Relation, boundary, relation

MS = 1_000_000  # nanoseconds
#: Candidate parents scored per root (see ``_keep``).
MAX_CANDIDATES = 48
_EM_ROUNDS = 20
_LR_CAP = 1e5


class ModelParams(msgspec.Struct, frozen=True):
    """Structural switches of the model that the accuracy benchmark chooses between.

    Each is a rule about the shape of an app rather than evidence in its spans, so each has to
    earn its place in leave-one-family-out figures (bench/accuracy.py); the defaults are the
    choice made on the whole corpus (bench/README.md has the figures).
    """

    #: Skip candidates whose trace is headed by another suspect root of the orphan's own unit
    #: (assumes a dispatcher's trace starts at an entry point: false for batch jobs and tests).
    peer_unit_exclusion: bool = False
    #: Skip candidates in units that only run suspect roots ("workers do not hand work out").
    worker_unit_exclusion: bool = False
    #: A non-periodic root in a unit that only runs suspect roots is likelier handed-over work.
    worker_unit_prior: bool = True

    #: Where a root's confidence comes from: the group's EM posterior ("posterior"), its
    #: calibration against time-shifted copies ("calibrated"), or the lesser of the two ("both").
    confidence: str = "both"
    #: How regular (robust coefficient of variation of the gaps between starts) a group's roots
    #: must recur to count as started by a timer. A timer on a loaded machine jitters; a pool
    #: that is never idle also starts work at a steady pace, and must not lose its lag evidence.
    periodic_cv: float = 0.25
    #: Count balance (``_balance``): a group whose roots start inside the spans of one name a
    #: fixed number of times each, whatever their length, is confident without its timing
    #: beating the shifted copies.
    count_balance: bool = True
    #: Where the counts show dispatch, they also say how much of the group is dispatched (the
    #: intercept times the dispatchers, over the roots): each root's posterior is taken with that
    #: share, weighted by the balance's own confidence, instead of only the timing's EM share.
    #: Timing alone is weak where one dispatcher at a time is active nearly all the time.
    balance_share: bool = False
    #: No root is more confident from its timing than its group's share of non-chance roots (one
    #: less Storey's estimate over the group's own p-values): a scheduler's faint pull on every
    #: root of a background job, significant over thousands of roots, is not a dispatch pattern.
    #: Count balance, a test of the group as a whole, is not capped.
    group_share_cap: bool = True
    #: The group tested as a whole (``_group_p``): where a group's roots together beat their
    #: copies beyond chance (false-discovery rate over every group of the dump), each root
    #: that scores better than half its copies is as confident as the group's share of
    #: non-chance roots. Inside a dispatcher that is busy nearly all the time one root's timing
    #: beats few copies; thirty roots that each beat most of theirs do not do so by chance.
    group_test: bool = True
    #: Ids shared by a root and an earlier trace (``shared_values``), where the spans keep
    #: their attribute values.
    shared_values: bool = True

    def describe(self) -> str:
        on = [
            k
            for k in (
                "peer_unit_exclusion",
                "worker_unit_exclusion",
                "worker_unit_prior",
                "count_balance",
                "balance_share",
                "group_share_cap",
                "group_test",
                "shared_values",
            )
            if getattr(self, k)
        ]
        rules = ", ".join(on) if on else "none"
        return f"rules: {rules}; confidence: {self.confidence}; periodic<{self.periodic_cv}"

    @staticmethod
    def variants() -> list[ModelParams]:
        return [
            ModelParams(
                worker_unit_prior=c,
                periodic_cv=cv,
                count_balance=b,
                group_share_cap=g,
                group_test=t,
                shared_values=v,
            )
            for c in (False, True)
            for cv in (0.1, 0.25)
            for b in (False, True)
            for g in (False, True)
            for t in (False, True)
            for v in (False, True)
        ]


class _Candidate(msgspec.Struct, gc=False):
    parent: Span
    rel: Relation
    lag: int = 0  # R.start - the latest event of the parent's trace before it
    gap: int = 1  # length of the quiet interval of that trace that R.start falls in
    anchor: tuple[str, int] = ("", 0)  # that latest event: (span name, 0 start / 1 end)
    one_thread: bool = False  # both on one thread: ends line up by scheduling, not by waiting


class _Suspect(msgspec.Struct, gc=False):
    span: Span
    candidates: list[_Candidate]
    #: How many candidates of each parent name were active, including any not kept (the 1/m prior).
    active_by_name: dict[str, int] = {}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Hashable, Hashable] = {}

    def find(self, x: Hashable) -> Hashable:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(x, x) != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: Hashable, b: Hashable) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def _partitions(units: Iterable[Unit]) -> dict[Unit, Hashable]:
    """Group units that could hand work to each other (see ``units.relation``)."""
    uf = _UnionFind()
    units = list(units)
    for u in units:
        uf.union(u, ("svc", u.service, u.host))
        uf.union(u, ("res", u.resource))
        if u.pid is not None:
            uf.union(u, ("pid", u.host, u.pid))
        if u.parent_pid is not None:
            uf.union(u, ("pid", u.host, u.parent_pid))
        if u.instance_id is not None:
            uf.union(u, ("inst", u.instance_id))
    return {u: uf.find(u) for u in units}


_NUMBERS = re.compile(r"\b(?=[0-9a-fA-F-]*[0-9])[0-9a-fA-F-]{8,}\b|[0-9]+")


@functools.lru_cache(maxsize=65536)
def shape(name: str) -> str:
    """A span name with its numbers and ids replaced: the name of the code, not of the item.

    Test cases, batch items and handlers often carry the item in their name ("handles item 7",
    "test_parse[3]", "GET /users/1234"). Grouped by literal name every one of them is alone, and
    recurrence, the model's main evidence against chance, cannot show; nor can work items of one
    kind be told apart from their dispatcher.
    """
    return _NUMBERS.sub("#", name)


def is_suspect(span: Span) -> bool:
    """A root that could be lost context: not an entry point, not deliberately linked."""
    return span.parent_span_id == 0 and span.kind not in ENTRY_KINDS and not span.links


class _Sweep(msgspec.Struct):
    suspects: list[_Suspect]
    duty: dict[str, float]  # share of the observed window during which a span of that name is active
    phases: dict[tuple[str, tuple[str, int]], float]  # (parent name, anchor) -> share of that name's time
    worker_units: set[int]  # ids of units with no entry spans whose roots are all suspects
    #: The spans of each candidate name's shape, in the order given (``_by_shape``): count
    #: balance looks up some of the same names.
    by_name: dict[str, list[Span]] = {}
    #: The first start and the last end of the spans.
    bounds: tuple[int, int] = (0, 0)


def _sweep(
    spans: list[Span],
    suspects_in: list[Span],
    model: ModelParams,
    reference: list[Span] | None = None,
    workers: set[int] | None = None,
) -> _Sweep:
    """Candidates of each suspect, and the duty cycle of each candidate name, in one partition.

    Spans active at a suspect's start are found by placing each span's interval over the sorted
    suspect start times (two bisections per span, in C), rather than by sweeping every span
    through a heap: suspects are a small share of the spans. ``workers``: ``_worker_units`` of
    the partition, when the caller has it (the calibration's pass sees the same units).
    """
    if not spans or not suspects_in:
        return _Sweep([], {}, {}, set())
    suspects_in.sort(key=attrgetter("start"))
    starts = [r.start for r in suspects_in]
    active_at: list[list[Span]] = [[] for _ in suspects_in]
    n = len(starts)
    earliest, latest = starts[0], starts[-1]
    # The first start and the last end of the spans, taken in the same loop: the times are read
    # anyway, and a pass of its own would read every span from memory again.
    first, last = spans[0].start, spans[0].end
    for a in spans:
        # Two comparisons pass over the spans that end before the first suspect or start after
        # the last (most spans of a partition with few suspects) without a call. For the rest,
        # one bisection tells whether any suspect starts inside the span (most spans hold none);
        # the second, for the span's end, only for those that do. (A plain loop: on these
        # structs it beats ``map`` with ``attrgetter`` over the same spans.)
        start, end = a.start, a.end
        if start < first:
            first = start
        if end > last:
            last = end
        if end < earliest or start > latest:
            continue
        i = bisect_left(starts, start)
        if i < n and starts[i] <= end:
            for k in range(i, bisect_right(starts, end, i)):
                active_at[k].append(a)
    # ``reference``: the real suspects, when ``suspects_in`` are their time-shifted copies (the
    # copies must see the same peers and workers as the roots they stand for).
    real = suspects_in if reference is None else reference
    if workers is None:
        workers = _worker_units(spans, real)
    # The unit and kind of the trace each suspect root heads, and whether that unit only runs
    # such roots (a worker).
    root_of = {r.trace_id: (id(r.unit), (r.unit.service, shape(r.name)), id(r.unit) in workers) for r in real}
    rel_cache: dict[tuple[int, int], Relation | None] = {}
    suspects: list[_Suspect] = []
    for r, active in zip(suspects_in, active_at, strict=True):
        best: dict[int, Span] = {}
        unit, kind = id(r.unit), (r.unit.service, shape(r.name))
        for a in active:
            # Work items run side by side: another root of the same kind being busy, any other
            # such root busy in the same unit (a pool running several jobs at once), or one
            # busy in a worker unit (workers run work, they do not hand it out) is concurrency,
            # not the dispatcher. A dispatcher's trace starts at an entry point.
            peer = root_of.get(a.trace_id)
            if a.trace_id == r.trace_id or (
                peer is not None
                and (
                    peer[1] == kind
                    or (model.peer_unit_exclusion and peer[0] == unit)
                    or (model.worker_unit_exclusion and peer[2])
                )
            ):
                continue
            cur = best.get(a.trace_id)
            if cur is None or a.start > cur.start or (a.start == cur.start and a.end < cur.end):
                best[a.trace_id] = a
        cands = []
        for p in best.values():
            key = (id(r.unit), id(p.unit))
            if key in rel_cache:
                rel = rel_cache[key]
            else:
                rel = rel_cache[key] = relation(r.unit, p.unit)
            if rel is not None:
                one = boundary(r.unit, p.unit, rel)[0] is Boundary.ASYNC
                cands.append(_Candidate(p, rel, one_thread=one))
        # Roots with no candidate stay in: a dispatched root always has its dispatcher active,
        # so one that started while nothing related was busy is evidence against the pattern.
        active_by_name: dict[str, int] = defaultdict(int)
        for c in cands:
            active_by_name[shape(c.parent.name)] += 1
        suspects.append(_Suspect(r, _keep(r, cands), dict(active_by_name)))
    if reference is not None:
        # The copies are only scored (``_like``) with what the real roots' sweep measured: their
        # candidates' anchors are needed, not the duty cycles nor the phases.
        _anchor_candidates(spans, suspects, phases=False)
        return _Sweep(suspects, {}, {}, workers)
    names = {shape(c.parent.name) for sus in suspects for c in sus.candidates}
    if not names:
        # No suspect has a candidate: no name to weigh, no anchor to place (and no pass over
        # the spans for them).
        return _Sweep(suspects, {}, {}, workers, {}, (first, last))
    by_name = _by_shape(spans, names)
    window = max(last - first, 1)
    duty = {name: _union_length(members) / window for name, members in by_name.items()}
    phases = _anchor_candidates(spans, suspects)
    return _Sweep(suspects, duty, phases, workers, by_name, (first, last))


def _by_shape(spans: list[Span], wanted: set[str]) -> dict[str, list[Span]]:
    """The spans whose name has one of the ``wanted`` shapes, by shape, in the order given.

    Names are few: each is shaped once, and each span only has its name looked up.
    """
    if not wanted:
        return {}
    # One pass: each new name is shaped as it first comes (``None``: not wanted).
    shaped: dict[str, str | None] = {}
    by_name: dict[str, list[Span]] = defaultdict(list)
    for a in spans:
        nm = a.name
        if nm in shaped:
            sh = shaped[nm]
        else:
            sh = shaped[nm] = s if (s := shape(nm)) in wanted else None
        if sh is not None:
            by_name[sh].append(a)
    return by_name


def _keep(r: Span, cands: list[_Candidate]) -> list[_Candidate]:
    """At most ``MAX_CANDIDATES``: the latest started and the soonest to end after the root.

    Those carry the timing evidence (a dispatch lag, a dispatcher waiting for the work); among
    hundreds of busy spans the rest only dilute it, and scoring them all is quadratic.
    """
    if len(cands) <= MAX_CANDIDATES:
        return cands
    half = MAX_CANDIDATES // 2
    latest = sorted(cands, key=lambda c: -c.parent.start)[:half]
    ending = sorted((c for c in cands if c.parent.end >= r.end), key=lambda c: c.parent.end)[:half]
    kept = {id(c): c for c in latest + ending}
    return list(kept.values())


def _union_length(spans: list[Span]) -> int:
    """How long at least one of the spans is active (``spans`` keep their order)."""
    spans = sorted(spans, key=attrgetter("start"))
    total = 0
    cur_s, cur_e = spans[0].start, spans[0].end
    for a in spans:
        if a.start > cur_e:
            total += cur_e - cur_s
            cur_s, cur_e = a.start, a.end
        elif a.end > cur_e:
            cur_e = a.end
    return total + cur_e - cur_s


_ENTRY_INTS = frozenset(map(int, ENTRY_KINDS))  # plain ints hash faster than IntEnum members


def _worker_units(spans: list[Span], suspects: list[Span]) -> set[int]:
    """Units (by identity) that only run handed-over work: no entry spans, every root a suspect.

    ``suspects`` are the suspect roots among ``spans``; every other root is an entry span or
    carries links, and a unit with either serves work of its own.
    """
    # One pass: every span is read from memory once (two C passes would read each twice). Only
    # the suspects' units can be workers and one entry span settles a unit, so the unit is looked
    # up once a run of its spans (a batch of one thread) and the other spans are skipped.
    undecided = {id(s.unit) for s in suspects}
    unit: Unit | None = None
    look = False
    for s in spans:
        if s.unit is not unit:
            unit = s.unit
            look = id(unit) in undecided
        if look and (s.kind in _ENTRY_INTS or (s.links and not s.parent_span_id)):
            undecided.discard(id(unit))
            look = False
    return undecided


def _lifetimes(spans: Iterable[Span], units: set[int]) -> dict[int, tuple[int, int]]:
    """The first start and the last end of the spans of each of ``units`` (by identity)."""
    out: dict[int, tuple[int, int]] = {}
    if not units:
        return out
    # The unit is looked up once a run of its spans (a batch of one thread), and the run's bounds
    # are kept in two variables until it ends, not in the dict at every span.
    unit: Unit | None = None
    inside = False
    lo = hi = 0
    for s in spans:
        if s.unit is not unit:
            if inside:
                _widen(out, id(unit), lo, hi)
            unit = s.unit
            inside = id(unit) in units
            lo, hi = s.start, s.end
        elif inside:
            if s.start < lo:
                lo = s.start
            if s.end > hi:
                hi = s.end
    if inside:
        _widen(out, id(unit), lo, hi)
    return out


def _widen(bounds: dict[int, tuple[int, int]], key: int, lo: int, hi: int) -> None:
    b = bounds.get(key)
    bounds[key] = (lo, hi) if b is None else (min(b[0], lo), max(b[1], hi))


def _periodic(group: list[_Suspect], cv: float) -> bool:
    """Roots that recur at a fixed interval in their unit: a timer, whatever the load.

    Robustly: half of the gaps between starts lie within ``cv`` of their median (a
    scaled median absolute deviation), so a tick delayed by a busy scheduler, or one skipped,
    does not hide the period.
    """
    by_unit: dict[Unit, list[int]] = defaultdict(list)
    for sus in group:
        by_unit[sus.span.unit].append(sus.span.start)
    for starts in by_unit.values():
        if len(starts) < _PERIODIC_MIN:
            continue
        starts.sort()
        gaps = sorted(b - a for a, b in pairwise(starts))
        median = gaps[len(gaps) // 2]
        if median <= 0:
            continue
        deviations = sorted(abs(g - median) for g in gaps)
        if _MAD_SCALE * deviations[len(deviations) // 2] / median < cv:
            return True
    return False


def _balance(group: list[_Suspect], spans_by_name: dict[str, list[Span]]) -> dict[str, tuple[float, float, float]]:
    """Per candidate parent name X, the log-likelihood ratio that X's spans each hand out roots,
    the share of the group that they hand out, and how many each hands out.

    Count, for every span D of name X, the group's roots (of other traces) that start inside
    it. A dispatcher starts a fixed number k of them itself, whatever its length, plus whatever
    other dispatchers' roots land in it by chance; roots that merely run while X spans are busy
    land in proportion to each D's length (``_balance_fit``). Only the number of roots per span
    counts, never their exact timing, so this holds where many dispatchers run at once and a
    root's timing cannot single out its own. The dispatched share is k times the spans, over
    the group's roots.
    """
    starts = sorted((sus.span.start, sus.span.trace_id) for sus in group)
    ts = [x[0] for x in starts]
    tids = [x[1] for x in starts]
    out: dict[str, tuple[float, float, float]] = {}
    # On one thread (an event loop) callbacks of one tick run together, so how many roots land
    # in a span there is scheduling, not dispatch: only spans of other threads are counted.
    names = {shape(c.parent.name) for sus in group for c in sus.candidates if not c.one_thread}
    first, last, n = ts[0], ts[-1], len(ts)
    for nm in names:
        counts: list[int] = []
        lengths: list[float] = []
        inside: list[tuple[int, int]] = []  # the roots each span holds, as a range of ``ts``
        count, length = counts.append, lengths.append
        lo = 0
        for d in spans_by_name.get(nm, []):
            start, end = d.start, d.end
            # Only spans of the time the group's roots were running: a root group that exists
            # for a part of the recording (a process started late, a job that stopped) would
            # otherwise make early or late spans look like dispatchers that handed out nothing.
            if start < first or end > last:
                continue
            # Spans come roughly in time order, far more of them than roots: a span's start most
            # often falls between the same two roots as the previous one's, which two comparisons
            # confirm (``lo`` is then what the bisection would return).
            if not ((lo == 0 or ts[lo - 1] < start) and (lo == n or start <= ts[lo])):
                lo = bisect_left(ts, start)
            if lo < n and ts[lo] <= end:
                # The roots inside it, less those of its own trace (counted in C over the slice).
                hi = bisect_right(ts, end, lo)
                count(hi - lo - tids[lo:hi].count(d.trace_id))
                inside.append((lo, hi))
            elif end >= start:
                # None inside (most spans): the first bisection tells, the second is not needed.
                count(0)
            else:
                # An impossible span, ending before it starts: counted as the bisections have it.
                count(bisect_right(ts, end) - lo)
            # ``1.0 *`` converts as ``float()`` does, without the call.
            length(1.0 * dur if (dur := end - start) > 1 else 1.0)
        if len(counts) < _BALANCE_MIN_SPANS:
            continue
        llr, per_span = _balance_fit(counts, lengths)
        # Each root is handed out once: k per span cannot exceed the roots the spans hold
        # between them (to within half a root, the fit's own rounding). Spans that overlap one
        # stretch of time, under a rate of roots that changes over it (a timer slowed by load),
        # fit an intercept too, but one that would hand out many times more roots than exist.
        if per_span > _covered(inside) / len(counts) + 0.5:
            continue
        out[nm] = (llr, min(_MAX_SHARE, per_span * len(counts) / len(group)), per_span)
    return out


def _covered(ranges: list[tuple[int, int]]) -> int:
    """How many indices the half-open ranges cover together."""
    total, reach = 0, 0
    for lo, hi in sorted(ranges):
        if hi > reach:
            total += hi - max(lo, reach)
            reach = hi
    return total


def _balance_fit(counts: list[int], lengths: list[float]) -> tuple[float, float]:
    """Log-likelihood ratio of "each span hands out k roots" against "roots land by length",
    and k (0 where there is no dispatch).

    Chance puts roots into a span in proportion to its length, whatever their spread (random
    starts are Poisson, a timer's ticks are more regular than that): the counts lie on a line
    through the origin. A dispatcher adds its own k whatever its length: the line starts at k.
    So the evidence is the intercept: least squares with and without it, Gaussian residuals of
    a variance the data sets (never below an integer count's rounding, ``_COUNT_NOISE``), and
    half a log of the number of spans paid for the extra parameter (BIC). An intercept below
    half a root is no dispatch at all.
    """
    n = len(counts)
    if not sum(counts):
        return -math.inf, 0.0
    penalty = 0.5 * math.log(n)
    mean_c, mean_t = sum(counts) / n, sum(lengths) / n
    sxx = sum((t - mean_t) ** 2 for t in lengths)
    sxy = sum((t - mean_t) * (c - mean_c) for c, t in zip(counts, lengths, strict=True))
    slope = max(sxy / sxx, 0.0) if sxx > 0 else 0.0
    intercept = mean_c - slope * mean_t
    if slope == 0.0:
        intercept = mean_c
    if intercept < 0.5:
        return -penalty, 0.0
    through_origin = sum(c * t for c, t in zip(counts, lengths, strict=True)) / sum(t * t for t in lengths)
    floor = n * _COUNT_NOISE
    rss1 = max(sum((c - intercept - slope * t) ** 2 for c, t in zip(counts, lengths, strict=True)), floor)
    rss0 = max(sum((c - through_origin * t) ** 2 for c, t in zip(counts, lengths, strict=True)), floor)
    return 0.5 * n * math.log(rss0 / rss1) - penalty, intercept


def _resolution(group: list[_Suspect]) -> float:
    """The timestamps' clock resolution: Node.js starts spans on a millisecond clock."""
    starts = [sus.span.start for sus in group] + [c.parent.start for sus in group for c in sus.candidates]
    whole_ms = sum(1 for t in starts if t % MS == 0)
    return float(MS) if whole_ms >= 0.9 * len(starts) else 1000.0


def _anchor_candidates(
    spans: list[Span], suspects: list[_Suspect], *, phases: bool = True
) -> dict[tuple[str, tuple[str, int]], float]:
    """Place each suspect in the event timeline of each candidate's trace.

    Code dispatches work at one program point: right after some span of the dispatching trace
    starts or ends. So a dispatched root starts soon after the same kind of event (the anchor)
    every time, while a chance root lands anywhere. For the chance side this also measures, per
    parent name, the share of its time spent after each anchor (its phases), unless ``phases``
    is false (time-shifted copies are scored with the real roots' phases).

    One trace at a time, so only that trace's event list is ever held.
    """
    by_trace: dict[int, list[tuple[Span, _Candidate]]] = defaultdict(list)
    for sus in suspects:
        for c in sus.candidates:
            by_trace[c.parent.trace_id].append((sus.span, c))
    if not by_trace:
        return {}  # nothing to place: no pass over the spans
    members: dict[int, list[Span]] = defaultdict(list)
    for s in spans:
        if s.trace_id in by_trace:
            members[s.trace_id].append(s)
    phase_time: dict[tuple[str, tuple[str, int]], float] = defaultdict(float)
    name_time: dict[str, float] = defaultdict(float)
    for tid, items in by_trace.items():
        # Each member's name is shaped once, for both of its events.
        ev = []
        for m in members.pop(tid):
            sh = shape(m.name)
            ev.append((m.start, sh, 0))
            ev.append((m.end, sh, 1))
        ev.sort()
        ts = [e[0] for e in ev]
        parents: dict[int, Span] = {}
        for r, c in items:
            t = r.start
            i = bisect_right(ts, t) - 1
            last = ev[i]
            nxt = ts[i + 1] if i + 1 < len(ts) else c.parent.end
            c.lag = t - last[0]
            c.gap = max(nxt - last[0], 1)
            c.anchor = (last[1], last[2])
            parents[c.parent.span_id] = c.parent
        if not phases:
            continue
        # Phase shares: how long each anchor is the latest event, inside each candidate parent.
        for p in parents.values():
            pn = shape(p.name)
            i = bisect_right(ts, p.start) - 1
            while i < len(ev) and ts[i] < p.end:
                lo = max(ts[i], p.start)
                hi = min(ts[i + 1] if i + 1 < len(ts) else p.end, p.end)
                if hi > lo:
                    phase_time[(pn, (ev[i][1], ev[i][2]))] += hi - lo
                i += 1
            name_time[pn] += max(p.end - p.start, 1)
    return {key: v / name_time[key[0]] for key, v in phase_time.items()}


Anchor = tuple[str, int]
Key = tuple[str, Anchor]  # (parent span name, anchor event)

#: Strength of the prior that a dispatched root's anchor is distributed like a chance root's
#: (the phase shares): the anchor only counts once the data concentrates on one.
_ANCHOR_PRIOR = 8.0
#: Phases rarer than this are treated as this common: a rare phase that a few roots happen to
#: land in must not outweigh the timing evidence.
_MIN_PHASE = 0.05
#: Strength of the prior that dispatching parent names occur as chance predicts (duty cycles).
_NAME_PRIOR = 4.0
#: Share of waiting dispatchers that end right after the work (the rest do more work first):
#: the exponential part of the end-gap density.
_WAIT_WEIGHT = 0.7
#: Likelihood ratio for a root in a dedicated worker unit (no entry spans, only such roots) that
#: is not periodic: work handed to a worker, rather than a job the unit runs on its own.
_WORKER_UNIT_LR = 4.0
#: Share of dispatched roots whose start waited in a queue (a busy pool, a process starting):
#: their lag is spread like a chance root's, so lag evidence is a mixture.
_QUEUED = 0.5
#: Overshoot share below which a root outliving its candidate counts no further against it.
_MIN_OVERSHOOT = 0.02
#: No time scale is learned below this (or the clock's resolution): scheduling noise.
_TAU_FLOOR = 0.1 * MS
#: Where the time scales start when a group offers nothing to start them from.
_TAU_START = 2.0 * MS
#: Weight, in roots, of the previous round's time scale (keeps a scale from collapsing to 0).
_TAU_PRIOR = 0.2
#: Duty cycles below this are treated as this: one rare span must not make any root look dispatched.
_MIN_DUTY = 0.05
#: EM starts from an even share of dispatched roots, so that neither basin is favoured.
_START_SHARE = 0.5
#: Beta prior on the dispatched share of a group: mean 0.25, worth 4 roots.
_SHARE_PRIOR = (1.0, 3.0)
_MAX_SHARE = 0.99
#: Beta prior on the share of dispatchers that wait for their work: mean 0.7, worth 2 roots.
_WAITED_PRIOR = (1.4, 0.6)
#: A group's roots are periodic with at least this many in one unit, and gaps this regular
#: (robust coefficient of variation: scaled median absolute deviation over median).
_PERIODIC_MIN = 5
#: Roots of a group (at most) moved to random times to measure what chance alone scores, and
#: copies of each: the calibration's resolution is 1 / (roots x copies).
_PLACEBO_ROOTS = 100
_PLACEBO_SHIFTS = 8
#: The copies move by up to this many of the group's dispatch time scales, and at least
#: ``_JITTER_FLOOR``.
_JITTER_SCALES = 4.0
_JITTER_FLOOR = 2.0 * MS
#: Share of whole-millisecond starts from which a group's clock is taken to be a millisecond one.
_GRID_SHARE = 0.9
_GRID_TOLERANCE = 1000  # ns
#: Storey's lambda: p-values above it are taken to come from chance roots.
_STOREY_LAMBDA = 0.5
#: The least p-value ``_group_p`` takes a log of (a root with no copy to beat scores 1, never 0).
_MIN_P = 1e-12
#: Fibonacci hashing: a span id to a fixed pseudo-random share (copies' shifts, ties).
_GOLDEN = 0x9E3779B97F4A7C15
#: Trace ids of the shifted copies start here, above any 128-bit trace id.
_PLACEBO_TRACE = 1 << 128
#: Scales a median absolute deviation to a standard deviation for normal data.
_MAD_SCALE = 1.4826
#: Count balance (``_balance``): spans of a name needed before their counts say anything, and
#: the least residual variance of a count (an integer's rounding: uniform over one unit).
_BALANCE_MIN_SPANS = 5
_COUNT_NOISE = 1.0 / 12.0
#: Prior share of a group that is handed-over work, and its log-odds: the mean of ``_SHARE_PRIOR``.
_PRIOR_SHARE = _SHARE_PRIOR[0] / sum(_SHARE_PRIOR)
_PRIOR_LOG_ODDS = math.log(_PRIOR_SHARE / (1.0 - _PRIOR_SHARE))
#: Log-odds below which a confidence is taken as zero (and ``exp`` cannot overflow).
_LOG_ODDS_CAP = 700.0


class _Params(msgspec.Struct):
    """What the EM learns per group of roots."""

    share: float = 0.25  # of the group that is dispatched (prior mean of Beta(1, 3))
    contained: float = 0.7  # P(the dispatcher outlives the work | dispatched)
    tau_end: float = 2.0 * MS  # typical gap between the work's end and the dispatcher's end
    tau_lag: float = 2.0 * MS  # typical dispatch lag after the anchor event
    names: dict[str, float] = {}  # parent name -> share of the dispatched roots
    resolution: float = 1.0  # clock resolution of the timestamps (ns): no time scale is finer
    anchors: dict[Key, float] = {}  # (parent name, anchor) -> P(anchor | name, dispatched) / P(anchor | chance)
    cover: dict[str, float] = {}  # parent name -> 1 / its duty cycle
    timer_driven: bool = False  # the group's roots recur at a fixed interval: a timer starts them
    worker_lr: float = 1.0  # for roots in worker units (``ModelParams.worker_unit_prior``)


class _Pair(msgspec.Struct, gc=False):
    """What the likelihood of one (root, candidate) pair needs, computed once per EM fit."""

    name: str
    key: Key
    lag: float
    gap: float  # quiet interval of the candidate's trace around the root's start
    contained: bool  # the root ends inside the candidate (within the clock's resolution)
    end_gap: float
    pdur: float
    rdur: float
    one_thread: bool
    per_name: int  # candidates of this root with the same parent name


def _pair(r: Span, c: _Candidate, resolution: float) -> _Pair:
    p = c.parent
    return _Pair(
        name=shape(p.name),
        key=_key(c),
        lag=float(c.lag),
        gap=float(c.gap),
        contained=r.end <= p.end + resolution,
        end_gap=float(max(p.end - r.end, 0)),
        pdur=float(max(p.end - p.start, 1)),
        rdur=float(max(r.end - r.start, 0)),
        one_thread=c.one_thread,
        per_name=0,
    )


def _pair_lr(q: _Pair, prm: _Params) -> float:
    """Likelihood ratio: the candidate dispatched the root, against the root started inside it by chance."""
    # Dispatch lag: a chance start lands uniformly in the quiet interval after the anchor, a
    # dispatched one soon after the anchor (or, queued, anywhere: the ``_QUEUED`` uniform part).
    # A timer decides when a periodic root starts; that it starts right after some event of a
    # busy trace (a thread that just blocked, handing over the interpreter or the event loop)
    # is scheduling, not dispatch. Only where it ends can still be evidence.
    lag_lr = _QUEUED + (1 - _QUEUED) * math.exp(-q.lag / prm.tau_lag) / prm.tau_lag * q.gap
    lr = 1.0 if prm.timer_driven else lag_lr
    if q.contained:
        # A dispatcher that waits for its work ends soon after it; by chance the root's end
        # lands anywhere in the room the candidate leaves after the root's own length.
        f_end = _WAIT_WEIGHT * math.exp(-q.end_gap / prm.tau_end) / prm.tau_end
        f_end += (1 - _WAIT_WEIGHT) / max(q.pdur - q.rdur, 1.0)
        lr *= prm.contained * f_end * q.pdur
    else:
        # Work that outlives its dispatcher is allowed (fire-and-forget) but is no evidence:
        # a short root overshooting a long span's end says nothing about dispatch.
        lr *= min(1.0, (1.0 - prm.contained) / max(_MIN_OVERSHOOT, min(1.0, q.rdur / q.pdur)))
    if q.one_thread:
        # On one thread (an event loop) callbacks and timers that fire in the same tick start
        # and end together whether or not one dispatched the other: timing proves nothing
        # either way (not even against chance copies, which lose that alignment), so such a gap
        # has to show itself by recurring above chance.
        return 1.0
    return min(lr, _LR_CAP)


def _key(c: _Candidate) -> Key:
    return (shape(c.parent.name), c.anchor)


class _Scored(msgspec.Struct):
    posterior: float
    weights: list[float]  # per candidate: posterior that it is the parent


def _em(group: list[_Suspect], sweep: _Sweep, model: ModelParams) -> tuple[_Params, list[_Scored]]:
    """Fit the group's dispatch pattern; score each root and each of its candidates."""
    counts: dict[str, int] = defaultdict(int)
    for sus in group:
        for nm in sorted({shape(c.parent.name) for c in sus.candidates}):
            counts[nm] += 1
    total = sum(counts.values())
    # Start the time scales at what the tightest candidate of each root shows: the dispatcher is
    # usually among the tightest, so EM starts near the dispatch basin instead of chance's.
    lags = sorted(min(c.lag for c in sus.candidates) for sus in group if sus.candidates)
    end_gaps = sorted(
        min(c.parent.end - sus.span.end for c in sus.candidates if c.parent.end >= sus.span.end)
        for sus in group
        if any(c.parent.end >= sus.span.end for c in sus.candidates)
    )
    res = _resolution(group)
    periodic = _periodic(group, model.periodic_cv)
    floor = max(_TAU_FLOOR, res)
    prm = _Params(
        share=_START_SHARE,
        names={nm: n / total for nm, n in counts.items()},
        tau_lag=max(floor, float(lags[len(lags) // 2])) if lags else _TAU_START,
        tau_end=max(floor, float(end_gaps[len(end_gaps) // 2])) if end_gaps else _TAU_START,
        resolution=res,
        timer_driven=periodic,
    )
    # Under chance a root lands inside a span of name X as often as X is active; and the parent
    # names of chance roots are spread like the duty cycles, which is the prior of the names.
    cover = {nm: 1.0 / max(sweep.duty.get(nm, 1.0), _MIN_DUTY) for nm in counts}
    duty_sum = sum(sweep.duty.get(nm, 1.0) for nm in counts)
    chance_names = {nm: sweep.duty.get(nm, 1.0) / duty_sum for nm in counts}
    worker = _WORKER_UNIT_LR if model.worker_unit_prior and not periodic else 1.0
    unit_lr = [worker if id(sus.span.unit) in sweep.worker_units else 1.0 for sus in group]
    pairs: list[list[_Pair]] = []
    for sus in group:
        row = [_pair(sus.span, c, res) for c in sus.candidates]
        for q in row:
            q.per_name = sus.active_by_name.get(q.name, 1)
        pairs.append(row)
    scored: list[_Scored] = []
    previous = (-1.0, -1.0, -1.0, -1.0)
    for _ in range(_EM_ROUNDS):
        scored = []
        post_sum = 0.0
        name_mass: dict[str, float] = defaultdict(float)
        anchor_mass: dict[Key, float] = defaultdict(float)
        w_sum = w_in = w_gap = w_lag = 0.0
        names, anchors_lr = prm.names, prm.anchors
        for row, ulr in zip(pairs, unit_lr, strict=True):
            terms = [
                names.get(q.name, 0.0) * cover[q.name] * _pair_lr(q, prm) * anchors_lr.get(q.key, 1.0) / q.per_name
                for q in row
            ]
            like = sum(terms) * ulr
            if like <= 0:
                scored.append(_Scored(0.0, [0.0] * len(terms)))
                continue
            odds = prm.share * like
            post = odds / (odds + 1.0 - prm.share)
            scale = post * ulr / like
            weights = [t * scale for t in terms]
            scored.append(_Scored(post, weights))
            post_sum += post
            best, best_w = row[0], -1.0
            for q, w in zip(row, weights, strict=True):
                if w > 0:
                    name_mass[q.name] += w
                    anchor_mass[q.key] += w
                    if w > best_w:
                        best, best_w = q, w
            # Time scales from each root's leading candidate only: averaging over every
            # candidate would let the unrelated ones (large lags) blur the dispatch pattern.
            w_sum += post
            if best.contained:
                w_in += post
                w_gap += post * best.end_gap
            w_lag += post * best.lag
        n = len(group)
        prm.share = min(_MAX_SHARE, (post_sum + _SHARE_PRIOR[0]) / (n + sum(_SHARE_PRIOR)))
        mass_sum = sum(name_mass.values())
        prm.names = {
            nm: (name_mass.get(nm, 0.0) + _NAME_PRIOR * chance_names[nm]) / (mass_sum + _NAME_PRIOR) for nm in counts
        }
        anchors = {}
        for key, mass in anchor_mass.items():
            chance = max(sweep.phases.get(key, 1.0), _MIN_PHASE)
            anchors[key] = (mass + _ANCHOR_PRIOR * chance) / (name_mass[key[0]] + _ANCHOR_PRIOR) / chance
        prm.anchors = anchors
        prm.contained = (w_in + _WAITED_PRIOR[0]) / (w_sum + sum(_WAITED_PRIOR))
        prm.tau_end = max(floor, (w_gap + _TAU_PRIOR * prm.tau_end) / (w_in + _TAU_PRIOR))
        prm.tau_lag = max(floor, (w_lag + _TAU_PRIOR * prm.tau_lag) / (w_sum + _TAU_PRIOR))
        now = (prm.share, prm.contained, prm.tau_end, prm.tau_lag)
        if all(abs(a - b) <= 1e-4 * max(abs(b), 1e-9) for a, b in zip(now, previous, strict=True)):
            break  # converged
        previous = now
    prm.cover = cover
    prm.worker_lr = worker
    return prm, scored


def _like(sus: _Suspect, prm: _Params, workers: set[int]) -> float:
    """How much likelier the root's candidates make dispatch than chance, under fitted ``prm``."""
    total = 0.0
    for c in sus.candidates:
        q = _pair(sus.span, c, prm.resolution)
        q.per_name = sus.active_by_name.get(q.name, 1)
        weight = prm.names.get(q.name, 0.0) * prm.cover.get(q.name, 1.0) * prm.anchors.get(q.key, 1.0)
        total += weight * _pair_lr(q, prm) / q.per_name
    return total * (prm.worker_lr if id(sus.span.unit) in workers else 1.0)


def _shifted(
    group: list[_Suspect],
    prm: _Params,
    first_id: int,
    window: tuple[int, int] | None = None,
    lifetimes: dict[int, tuple[int, int]] | None = None,
) -> list[Span]:
    """Copies of (a sample of) the group's roots, each moved a little: what chance scores.

    A jitter, not a move to anywhere: each copy starts between half and all of ``_jitter(prm)``
    earlier or later (a pseudo-random amount derived from its span id), far enough to break an
    alignment at the dispatch time scale, near enough to keep the activity around it. Roots
    start when their process is busy, so a copy placed at a random time would meet fewer busy
    spans than any real root and make every root look dispatched. Each copy keeps its unit,
    name and length and heads a trace of its own (ids from ``first_id``).

    A copy stays where its root could have been: inside the lifetime of the root's unit (its
    first span's start to its last span's end, from ``lifetimes`` by unit identity) when the unit
    runs several of the group's roots, else (one root in a process started for it) inside
    ``window``, the observed time span; one that would leave it wraps around to the other side
    (a circular shift). A copy moved to where its process was not
    running, or out of what was recorded, meets a different load (often none), and would make
    any root look dispatched when the group's time scales are long next to the recording.
    """
    jitter = _jitter(prm)
    # Roots stamped on a millisecond clock stay on it: coincidences on a coarse grid are as
    # common for the copies as for the roots.
    # (within a microsecond: timestamps converted through floating point land just off it).
    on_grid = sum(1 for x in group if (x.span.start + _GRID_TOLERANCE) % MS <= 2 * _GRID_TOLERANCE)
    grid = MS if on_grid >= _GRID_SHARE * len(group) else 1
    step = max(1, len(group) // _PLACEBO_ROOTS)
    per_unit: dict[int, int] = defaultdict(int)
    for sus in group:
        per_unit[id(sus.span.unit)] += 1
    out: list[Span] = []
    for sus in group[::step][:_PLACEBO_ROOTS]:
        r = sus.span
        dur = r.end - r.start
        for k in range(_PLACEBO_SHIFTS):
            h = (r.span_id * (2 * k + 1) * _GOLDEN >> 17) & 0xFFFF
            offset = max(grid, round(jitter * (0.5 + 0.5 * h / 0xFFFF) / grid) * grid)
            start = r.start + (offset if k % 2 else -offset)
            bounds = (lifetimes or {}).get(id(r.unit)) if per_unit[id(r.unit)] > 1 else None
            if bounds is None or bounds[1] - bounds[0] - dur <= grid:
                bounds = window
            if bounds is not None:
                lo, room = bounds[0], bounds[1] - bounds[0] - dur
                if room > grid:
                    start = lo + (start - lo) % room
            out.append(msgspec.structs.replace(r, trace_id=first_id + len(out), start=start, end=start + dur))
    return out


def _jitter(prm: _Params) -> float:
    """How far the copies move: several of the group's dispatch time scales."""
    # A timer decides when a periodic root starts: its lag is no evidence, and its scale no guide.
    scale = prm.tau_end if prm.timer_driven else max(prm.tau_lag, prm.tau_end)
    return max(_JITTER_SCALES * scale, _JITTER_FLOOR, _JITTER_SCALES * prm.resolution)


def _calibrate(likes: list[float], placebo: list[float]) -> list[float]:
    """Confidence per root of one group: its p-values against the copies, then the FDR step."""
    return _fdr_confidence(_p_values(likes, placebo))


def _p_values(likes: list[float], placebo: list[float], ties: list[float] | None = None) -> list[float]:
    """Per root, the share of its group's copies (roots moved in time) that look at least as dispatched.

    Timing that any busy process offers by coincidence (a dense stream of events near every
    start) scores the copies as high as the roots, and so earns nothing. With no copy to compare
    with, nothing is earned either. Where evidence is neutral (one thread, a timer) many roots
    and copies score exactly alike; a tie counts as a share ``ties[i]`` (in [0, 1), fixed per
    root) of itself, so that p-values of chance roots stay uniform and the estimate of how many
    roots are chance (``_fdr_confidence``) is not fooled by a heap of ties just under one half.
    """
    m = len(placebo)
    if not m:
        return [1.0] * len(likes)
    ranked = sorted(placebo)
    out = []
    for i, x in enumerate(likes):
        if x <= 0:
            out.append(1.0)
            continue
        lo, hi = bisect_left(ranked, x), bisect_right(ranked, x)
        u = ties[i] if ties is not None else 1.0
        out.append((m - hi + u * (hi - lo + 1)) / (1 + m))
    return out


def _chance_share(q: list[float]) -> float:
    """Storey's estimate of the share of chance roots: p-values above lambda come from them."""
    return min(1.0, (sum(1 for x in q if x > _STOREY_LAMBDA) + 1) / ((1 - _STOREY_LAMBDA) * len(q) + 1))


def _fdr_confidence(q: list[float]) -> list[float]:
    """One less each root's false-discovery rate, over every root tested together.

    The share of chance roots comes from the p-values above ``_STOREY_LAMBDA`` (Storey's
    estimate, with one pseudo-root), and the rate follows Benjamini-Hochberg's step-up, capped by
    the root's own p-value. Every group's roots are tested together: a dump of a hundred test
    cases, each a group of its own, would otherwise let one in nine beat its eight copies by luck
    alone and be reported with confidence 0.89.
    """
    n = len(q)
    if not n:
        return []
    pi0 = _chance_share(q)
    order = sorted(range(n), key=q.__getitem__)
    fdr = [1.0] * n
    running = 1.0
    for rank in range(n, 0, -1):
        i = order[rank - 1]
        running = min(running, pi0 * q[i] * n / rank)
        fdr[i] = min(1.0, running)
    # The step-up rate is a set's: a root that scores like chance must not borrow confidence
    # from strong neighbours, so none is more confident than its own p-value allows.
    return [min(1.0 - f, 1.0 - x) for f, x in zip(fdr, q, strict=True)]


def _evidence(r: Span, c: _Candidate, m_same: int, prm: _Params, duty: float) -> tuple[str, ...]:
    p = c.parent
    ev = [f"started {(r.start - p.start) / MS:.1f} ms into {p.name!r} ({c.rel.value})"]
    if r.end <= p.end:
        ev.append(f"ended {(p.end - r.end) / MS:.1f} ms before it (the dispatcher waited for it)")
    elif r.end <= p.end + prm.resolution:
        ev.append("ended with it, within the clock's resolution (the dispatcher waited for it)")
    else:
        ev.append(f"outlived it by {(r.end - p.end) / MS:.1f} ms (fire-and-forget)")
    what = "start" if c.anchor[1] == 0 else "end"
    ev.append(
        f"{c.lag / MS:.1f} ms after the {what} of {c.anchor[0]!r} in that trace "
        f"(typical here: {prm.tau_lag / MS:.1f} ms)"
    )
    ev.append(
        f"{p.name!r} spans are active {duty:.0%} of the time; an estimated {prm.share:.0%} of "
        f"these roots are work handed over like this"
    )
    if m_same > 1:
        ev.append(f"{m_same} {p.name!r} spans of other traces were active at once")
    return tuple(ev)


class SearchPlan(msgspec.Struct):
    """The search split into independent partitions (units that could hand work to each other)."""

    parts: list[tuple[list[Span], list[Span]]]  # (every span, the suspect roots) per partition
    group_sizes: dict[tuple[str, str], int]  # suspect roots per (service, name)


def plan_search(
    spans: Sequence[Span], *, units: dict[int, Unit] | None = None, roots: Sequence[Span] | None = None
) -> SearchPlan:
    """Which spans each partition with suspects holds, in the order the spans came.

    ``units`` (every span's unit by identity, in the order the spans first use them) and
    ``roots`` (the root spans, in order), when the caller has them: each costs a pass over the
    spans.
    """
    if roots is None:
        roots = [s for s in spans if s.parent_span_id == 0]
    suspect_spans = [s for s in roots if is_suspect(s)]
    if not suspect_spans:
        return SearchPlan([], {})
    group_sizes: dict[tuple[str, str], int] = defaultdict(int)
    for r in suspect_spans:
        group_sizes[(r.unit.service, r.name)] += 1
    # Units are interned, so identity keys avoid hashing every field of a frozen struct.
    units_by_id = units if units is not None else {id(s.unit): s.unit for s in spans}
    part_of = {id(u): key for u, key in _partitions(units_by_id.values()).items()}
    wanted = {part_of[id(r.unit)] for r in suspect_spans}
    parts: dict[Hashable, list[Span]] = defaultdict(list)
    # Spans come in runs of one unit (a batch of one thread): look the partition up once a run.
    unit: Unit | None = None
    add = None
    for s in spans:
        if s.unit is not unit:
            unit = s.unit
            key = part_of[id(unit)]
            add = parts[key].append if key in wanted else None
        if add is not None:
            add(s)
    part_suspects: dict[Hashable, list[Span]] = defaultdict(list)
    for r in suspect_spans:
        part_suspects[part_of[id(r.unit)]].append(r)
    return SearchPlan([(members, part_suspects[key]) for key, members in parts.items()], dict(group_sizes))


class _Tested(msgspec.Struct, gc=False):
    """A suspect's best explanation, before the confidence is decided over every root together."""

    orphan: Orphan  # its confidence is a placeholder until ``_decide``
    posterior: float
    p_value: float
    #: From the group's count balance on the parent's name (``ModelParams.count_balance``).
    balanced: float = 0.0
    #: One less the share of chance roots in the group (``ModelParams.group_share_cap``).
    group_share: float = 1.0
    #: The group's identity within the dump, and its p-value as a whole (``_group_p``).
    group: tuple[int, str, str] = (0, "", "")
    group_p: float = 1.0
    #: The root's p-value with ties counted in full (``_p_values`` without tie shares).
    p_bound: float = 1.0
    #: What the group test and the count balance saw, in words (one string per group and per
    #: parent name), for a root whose confidence comes from them rather than its own timing.
    group_note: str = ""
    balance_note: str = ""


def _search_part(members: list[Span], part_suspects: list[Span], model: ModelParams) -> list[_Tested]:
    tested: list[_Tested] = []
    workers = _worker_units(members, part_suspects)
    sweep = _sweep(members, part_suspects, model, workers=workers)
    groups: dict[tuple[str, str], list[_Suspect]] = defaultdict(list)
    for sus in sweep.suspects:
        groups[(sus.span.unit.service, shape(sus.span.name))].append(sus)
    fitted = {key: _em(group, sweep, model) for key, group in groups.items() if any(s.candidates for s in group)}
    window = sweep.bounds
    # Only the units that run several roots of a fitted group are looked up (``_shifted``).
    needed: set[int] = set()
    for key in fitted:
        roots_in = Counter(id(sus.span.unit) for sus in groups[key])
        needed.update(u for u, n in roots_in.items() if n > 1)
    lifetimes = _lifetimes(members, needed)
    # What chance scores: every fitted group's roots jittered, in one pass for all groups.
    copies: dict[tuple[str, str], list[Span]] = {}
    for key, (prm, _) in fitted.items():
        first = _PLACEBO_TRACE + sum(len(c) for c in copies.values())
        copies[key] = _shifted(groups[key], prm, first, window, lifetimes)
    shifted = [c for cs in copies.values() for c in cs]
    placebo = _sweep(members, shifted, model, reference=part_suspects, workers=workers)
    by_name: dict[str, list[Span]] = {}
    if model.count_balance:
        # Only the names ``_balance`` looks up: its groups' candidate parents off one thread.
        # A subset of the candidate names the sweep has already picked out.
        wanted = {shape(c.parent.name) for k in fitted for sus in groups[k] for c in sus.candidates if not c.one_thread}
        by_name = {nm: sweep.by_name[nm] for nm in wanted if nm in sweep.by_name}
    placebo_groups: dict[tuple[str, str], list[_Suspect]] = defaultdict(list)
    for sus in placebo.suspects:
        placebo_groups[(sus.span.unit.service, shape(sus.span.name))].append(sus)
    for key, (prm, scored) in fitted.items():
        group = groups[key]
        likes = [_like(sus, prm, sweep.worker_units) for sus in group]
        chance = [_like(sus, prm, sweep.worker_units) for sus in placebo_groups.get(key, [])]
        balance = _balance(group, by_name) if model.count_balance else {}
        ties = [((sus.span.span_id * _GOLDEN) >> 11 & 0xFFFFF) / 0x100000 for sus in group]
        p_values = _p_values(likes, chance, ties)
        # For what one root's p-value can say on its own, a root that beats all of its group's
        # copies has p = 1 / (copies + 1), not a random share of it: the tie share keeps chance
        # p-values uniform for the estimates over many roots, and would let a lone root of a
        # small group look a hundred times surer than eight copies can show.
        bounds = _p_values(likes, chance)
        # Without the pseudo-root: that keeps one small group's FDR honest, but here it would cap
        # every group of eight at 0.8 however clearly each of its roots beats its copies.
        share = 1.0 - min(1.0, sum(1 for x in p_values if x > _STOREY_LAMBDA) / ((1 - _STOREY_LAMBDA) * len(p_values)))
        # Roots that start inside one span share one coincidence (a burst of test cases all
        # landing in one long query): the group counts as many observations as distinct spans.
        # Each root's likeliest parent (its first most weighted candidate), where it has one.
        best = [max(range(len(sc.weights)), key=sc.weights.__getitem__) if sc.posterior > 0 else -1 for sc in scored]
        parents = {sus.candidates[i].parent.span_id for sus, i in zip(group, best, strict=True) if i >= 0}
        gid, group_p = (id(members), *key), _group_p(p_values, len(parents))
        together = (
            f"the group's {len(group)} roots, started in {len(parents)} spans, together beat copies of "
            f"themselves moved in time (p = {group_p:.2g})"
        )
        counted_notes: dict[str, str] = {}
        for sus, sc, q, bound, i in zip(group, scored, p_values, bounds, best, strict=True):
            if i < 0:
                continue
            c = sus.candidates[i]
            bnd, why = boundary(sus.span.unit, c.parent.unit, c.rel)
            m_same = sum(1 for o in sus.candidates if shape(o.parent.name) == shape(c.parent.name))
            orphan = Orphan(
                span=sus.span,
                parent=c.parent,
                boundary=bnd,
                boundary_evidence=why,
                confidence=sc.posterior,
                parent_confidence=sc.weights[i] / sc.posterior,
                candidates=len(sus.candidates),
                evidence=_evidence(sus.span, c, m_same, prm, sweep.duty.get(shape(c.parent.name), 1.0)),
            )
            llr, counted_share, per_span = balance.get(shape(c.parent.name), (-math.inf, 0.0, 0.0))
            llr += _PRIOR_LOG_ODDS
            balanced = min(1.0 / (1.0 + math.exp(-llr)), 1.0) if llr > -_LOG_ODDS_CAP else 0.0
            posterior = sc.posterior
            # The counts only add: where they show no more dispatch than the timing does, they
            # are silent (as for the calibration, which they may raise but never lower).
            if model.balance_share and balanced > 0.0 and counted_share > prm.share:
                posterior = _with_share(posterior, prm.share, counted_share, balanced)
            counted = ""
            if balanced > 0.0:
                name = shape(c.parent.name)
                counted = counted_notes.get(name) or counted_notes.setdefault(
                    name,
                    f"{name!r} spans each hold about {per_span:.0f} of these roots more than their length "
                    "explains: a fixed number handed out by each",
                )
            tested.append(_Tested(orphan, posterior, q, balanced, share, gid, group_p, bound, together, counted))
    return tested


def _group_p(p_values: list[float], independent: int | None = None) -> float:
    """Fisher's combination of a group's p-values: how likely chance roots are to score so well together.

    ``-2 * sum(log p)`` of ``n`` uniform p-values is chi-square with ``2n`` degrees of freedom,
    whose survival function has a closed form for even degrees. The tie shares of ``_p_values``
    keep chance roots' p-values uniform, so the combination is calibrated.

    Roots are not always independent: a burst of roots starting inside one span shares one
    coincidence. With ``independent`` observations (the distinct spans the roots' likeliest
    parents are) the statistic is scaled to that many and taken with ``2 * independent`` degrees
    of freedom (the design effect of clustered samples).
    """
    if not p_values:
        return 1.0
    n = len(p_values) if independent is None else max(1, min(independent, len(p_values)))
    half = -sum(math.log(max(p, _MIN_P)) for p in p_values) * n / len(p_values)  # x / 2
    term, total = 1.0, 1.0
    for k in range(1, n):
        term *= half / k
        total += term
        if term < total * 1e-16:
            break
    return min(1.0, math.exp(-half + math.log(total)))


def _p_to_posterior(p: float, prior: float = _PRIOR_SHARE) -> float:
    """The most a p-value can say for dispatch, from ``prior`` odds that it is.

    A p-value is not the probability of chance. The largest Bayes factor any alternative can
    draw from it is ``1 / (-e p ln p)`` for ``p < 1/e`` (Sellke, Bayarri and Berger, 2001): a
    root or a group that beats its copies at p = 0.1 is hardly evidence at all, at p = 0.001 it
    is. One false-discovery rate over a dump of a few roots would otherwise take a lone timer
    tick that beat its copies at p = 0.07 for a confident finding.
    """
    if p <= 0.0:
        return 1.0
    log_bf = 0.0 if p >= 1.0 / math.e else -math.log(-math.e * p * math.log(p))
    prior = min(max(prior, 1.0 - _MAX_SHARE), _MAX_SHARE)
    return 1.0 / (1.0 + math.exp(-(math.log(prior / (1.0 - prior)) + log_bf)))


def _smoothed_share(share: float, n: int) -> float:
    """A group's share of non-chance roots with the prior of ``_SHARE_PRIOR``: a group of two
    roots that both beat half their copies is not all dispatched on that alone."""
    return (share * n + _SHARE_PRIOR[0]) / (n + sum(_SHARE_PRIOR))


def _with_share(posterior: float, share: float, counted: float, weight: float) -> float:
    """A root's posterior taken again with the share of its group that the counts show dispatched.

    The EM's posterior is ``share * L / (share * L + 1 - share)`` for the root's likelihood ratio
    ``L``; ``L`` is recovered from it and the posterior recomputed with ``counted``. The two
    are mixed by ``weight``, the count balance's confidence that the counts show dispatch at all.
    Called only where ``counted`` exceeds ``share``: the counts raise a posterior, never lower it.
    """
    if posterior >= 1.0 or posterior <= 0.0 or not 0.0 < share < 1.0:
        return posterior
    ratio = posterior / (1.0 - posterior) * (1.0 - share) / share
    counted = min(max(counted, 0.0), _MAX_SHARE)
    recounted = counted * ratio / (counted * ratio + 1.0 - counted)
    return weight * recounted + (1.0 - weight) * posterior


def _decide(tested: list[_Tested], model: ModelParams) -> list[Orphan]:
    """Each root's confidence, with the false-discovery rate taken over every root of the dump."""
    calibrated = _fdr_confidence([t.p_value for t in tested])
    groups: dict[tuple[int, str, str], float] = {}
    if model.group_test:
        for t in tested:
            groups[t.group] = t.group_p
        ids = list(groups)
        groups = {g: _p_to_posterior(groups[g]) for g in ids}
    sizes = Counter(t.group for t in tested)
    out = []
    for t, cal in zip(tested, calibrated, strict=True):
        if model.group_share_cap:
            cal = min(cal, t.group_share, _p_to_posterior(t.p_bound, _smoothed_share(t.group_share, sizes[t.group])))
        own = cal
        # A group that beats chance as a whole lends its share to each root that does better
        # than half its copies (the roots above lambda are the ones Storey counts as chance).
        lent = min(groups[t.group], t.group_share) if t.p_value <= _STOREY_LAMBDA and t.group in groups else 0.0
        cal = max(cal, lent, t.balanced)
        conf = {"posterior": t.posterior, "calibrated": cal}.get(model.confidence, min(t.posterior, cal))
        if conf > 0:
            # Where the confidence is the group's rather than the root's own, the evidence says so.
            notes: tuple[str, ...] = ()
            if cal > own:
                if t.balanced >= lent:
                    notes = (t.balance_note,)
                else:
                    notes = (f"{t.group_note}; alone, this one beats {1 - t.p_value:.0%} of its copies",)
            out.append(msgspec.structs.replace(t.orphan, confidence=conf, evidence=t.orphan.evidence + notes))
    return out


def find_orphans(
    spans: Sequence[Span],
    model: ModelParams | None = None,
    *,
    units: dict[int, Unit] | None = None,
    roots: Sequence[Span] | None = None,
) -> tuple[list[Orphan], dict[tuple[str, str], int]]:
    """Suspected context-loss roots, and how many suspect roots each (service, name) group has.

    Returns every suspect with at least one candidate parent, with its confidence; the caller
    applies the reporting threshold. ``units`` and ``roots``: see ``plan_search``.
    """
    model = model or ModelParams()
    plan = plan_search(spans, units=units, roots=roots)
    tested = [t for members, suspects in plan.parts for t in _search_part(members, suspects, model)]
    # Most confident first: ``_acyclic`` keeps the better supported direction.
    orphans = _decide(tested, model)
    suspects = [r for r in (roots if roots is not None else spans) if is_suspect(r)]
    if model.shared_values:
        orphans = with_links(orphans, find_links(spans, suspects, _group_of))
    orphans.sort(key=lambda o: (-o.confidence, o.span.start))
    return _acyclic(_one_way(orphans, {r.trace_id: _group_of(r) for r in suspects})), plan.group_sizes


def _group_of(r: Span) -> tuple[str, str]:
    return r.unit.service, shape(r.name)


def _one_way(orphans: list[Orphan], heads: dict[int, tuple[str, str]]) -> list[Orphan]:
    """Drop the findings that hand work from one group of roots to another against the group's
    better supported direction.

    Where dispatchers are roots too, a busy worker's span is where the next dispatcher happens
    to start: the dispatchers look handed out by their own workers' traces while the workers
    look handed out by the dispatchers. One kind of root does not both hand work to another and
    take work from it, so of the two directions between two groups (the orphan's, and that of
    the root heading its parent's trace, ``heads``) the one with less summed confidence goes.
    Within one group (items of a batch) both directions stay: ``_acyclic`` sorts out traces.
    """
    edge: dict[tuple[tuple[str, str], tuple[str, str]], float] = defaultdict(float)
    for o in orphans:
        head = heads.get(o.parent.trace_id) if o.parent is not None else None
        if head is not None:
            edge[(_group_of(o.span), head)] += o.confidence
    weaker = {(g, h) for (g, h), w in edge.items() if g != h and edge.get((h, g), 0.0) > w}
    if not weaker:
        return orphans
    return [
        o
        for o in orphans
        if o.parent is None
        or heads.get(o.parent.trace_id) is None
        or (_group_of(o.span), heads[o.parent.trace_id]) not in weaker
    ]


def _acyclic(orphans: list[Orphan]) -> list[Orphan]:
    """Drop the weaker of two findings that would make a trace its own ancestor.

    Once a dispatcher can itself be a root, two roots can each look dispatched from the other's
    trace (a batch item busy while a pool thread starts the previous item's work, and the
    reverse). Each orphan hangs its trace under another trace, so the findings form parent
    pointers between traces; taken most confident first, one that closes a loop is the
    direction the evidence supports less. ``orphans`` must be sorted most confident first.
    """
    up: dict[int, int] = {}
    kept: list[Orphan] = []
    for o in orphans:
        if o.parent is None:
            kept.append(o)
            continue
        child, t = o.span.trace_id, o.parent.trace_id
        seen = 0
        while t != child and t in up and seen <= len(up):
            t = up[t]
            seen += 1
        if t == child:
            continue
        up[child] = o.parent.trace_id
        kept.append(o)
    return kept
