"""Silent dispatches: work crossed a boundary and nothing came back.

A worker thread or process that never initialised an SDK, lost its exporter in a fork, or exited
before its span processor flushed exports nothing: the dispatching span shows a hole where the
work ran. A hole alone is also what a slow uninstrumented call looks like (a DNS lookup, a
driver without instrumentation), and reporting those is noise. So a hole is reported only with
evidence that a *worker* belongs there:

* **the same place is filled elsewhere**: in other spans of the same service and name, the same
  stretch (after the same child, before the same child) holds a child from another unit of the
  same app (another thread, a child process, the same service on the host): the work normally
  comes back from a worker; here it did not. A child in another service is an RPC, not a worker;
* **its length matches** the worker spans that fill that place elsewhere;
* **it recurs**: several spans of that name have the hole at that place.

A hole during which another unit exported spans of the same trace is not silent: the worker
reported, and its missing parent is a lost parent (``missing.py``). Nor is a hole in which a root
of another unit of the service starts: the worker exported into a trace of its own (lost
context, ``orphans.py``).

A hole that is never filled by another unit's span (every instance, or only by spans of the
dispatcher's own unit) is not reported: spans cannot tell such a worker from a slow call. Under
``run``, the process tree answers that (a child process that never exported).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from operator import attrgetter

import msgspec

from ctxdoctor.diagnose.traces import NAME, UNIT, Slice, flag, index, named, subset, traces
from ctxdoctor.findings import SilentDispatch
from ctxdoctor.fixes import silent_fix
from ctxdoctor.model import Span, Unit
from ctxdoctor.units import Boundary, boundary, relation

MS = 1_000_000  # nanoseconds
START, END = "^", "$"  # the slot edges when no child precedes or follows


class SilentParams(msgspec.Struct, frozen=True):
    """Every hand-set literal of the silent-dispatch model, named (docs/leaks.md says why)."""

    #: A hole must cover at least this share of its span and last at least ``hole_min_ns``.
    hole_share: float = 0.5
    hole_min_ns: int = 1 * MS
    #: Log-odds before evidence: a hole is usually an uninstrumented call.
    prior: float = -3.0
    #: Per doubling of the spans whose same place is filled by another unit, capped.
    w_filled: float = 1.0
    filled_cap: float = 4.0
    #: Fewest filled instances that count as evidence at all (one could be a coincidence).
    min_filled: int = 3
    #: The hole lasts between 1/dur_ratio and dur_ratio times the typical filling worker span.
    w_duration: float = 2.0
    w_duration_mismatch: float = -2.0
    dur_ratio: float = 4.0
    #: Several spans share the hole at this place.
    w_recur: float = 1.0
    min_recur: int = 2
    #: Reported when the confidence is at least this (the value bench/accuracy_leaks.py tunes to,
    #: held out; ``--min-confidence`` applies on top).
    threshold: float = 0.7


DEFAULT = SilentParams()


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def foreign(child: Unit, parent: Unit) -> bool:
    """Whether a child ran in another unit: another SDK resource, or a thread known to differ."""
    if child.resource != parent.resource:
        return True
    if child.thread_id is not None and parent.thread_id is not None:
        return child.thread_id != parent.thread_id
    return False


def largest_hole(span: Span, children: Sequence[Span]) -> tuple[int, int, str, str]:
    """The longest stretch of ``span`` no child covers: (start, end, child before, child after)."""
    best = (span.start, span.start, START, END)
    cursor, before = span.start, START
    for c in sorted(children, key=attrgetter("start")):
        if c.start > cursor and c.start - cursor > best[1] - best[0]:
            best = (cursor, min(c.start, span.end), before, c.name)
        if c.end > cursor:
            cursor, before = c.end, c.name
    if span.end > cursor and span.end - cursor > best[1] - best[0]:
        best = (cursor, span.end, before, END)
    return best


def slot_of(worker: Span, own: Sequence[Span]) -> tuple[str, str]:
    """Where a worker's span sits among the dispatcher's own children: (child before, child after)."""
    before = max((c for c in own if c.end <= worker.start), key=attrgetter("end"), default=None)
    after = min((c for c in own if c.start >= worker.end), key=attrgetter("start"), default=None)
    return (before.name if before else START, after.name if after else END)


class _Hole(msgspec.Struct, gc=False):
    span: Span
    start: int
    end: int
    slot: tuple[str, str]


class _Filled(msgspec.Struct, gc=False):
    count: int = 0
    durations: list[int] = msgspec.field(default_factory=list)
    worker: Span | None = None


class _Roots:
    """Roots by service and start time: a worker that lost its context exported into a trace of
    its own, which starts inside the dispatcher's hole."""

    def __init__(self, roots: Iterable[Span], services: set[str]) -> None:
        by_service: dict[str, list[Span]] = defaultdict(list)
        for s in roots:
            if s.unit.service in services:
                by_service[s.unit.service].append(s)
        self._spans = {k: sorted(v, key=attrgetter("start")) for k, v in by_service.items()}
        self._starts = {k: [s.start for s in v] for k, v in self._spans.items()}

    def foreign_root_within(self, span: Span, start: int, end: int) -> bool:
        spans, starts = self._spans.get(span.unit.service, []), self._starts.get(span.unit.service, [])
        lo, hi = bisect_left(starts, start), bisect_right(starts, end)
        return any(foreign(r.unit, span.unit) for r in spans[lo:hi])


class WorkerChildren:
    """The traces with a span under a parent in another unit that can hold a worker of it
    (``traces.Filter``): only those show where workers' spans sit.

    Units are interned and few: which unit can hold a worker of which is settled once per pair.
    A worker is another thread or process *of the same app* (same process, a child process, or
    the same service on the host); a call into another service is an RPC, whose callee not
    exporting is that service's business.
    """

    def __init__(self, spans: Sequence[Span]) -> None:
        # Spans come in runs of one unit (a batch is one resource and scope): a unit is looked up
        # once per run instead of once per span.
        units: dict[int, Unit] = {}
        last = None
        for s in spans:
            if s.unit is not last:
                last = s.unit
                units.setdefault(id(last), last)
        #: Every span's unit by identity, in the order the spans first use them.
        self.units = units
        self.workers_of: dict[int, set[int]] = {
            pid: {cid for cid, c in units.items() if cid != pid and foreign(c, p) and relation(c, p) is not None}
            for pid, p in units.items()
        }
        self.traces: set[int] = set()
        self.unsettled: set[int] = set()
        #: Worker spans seen under each (service, name) of dispatcher, in the settled slices.
        self.edges: Counter[tuple[str, str]] = Counter()

    def __call__(self, found: Slice) -> None:
        of = self.workers_of
        held = [(c, q) for c, q in found.crossing if id(c.unit) in of[id(q.unit)]]
        self.traces.update([c.trace_id for c, _ in held])
        self.edges.update([(q.unit.service, q.name) for _, q in held])


def _with_holes(spans: Sequence[Span], eligible: set[tuple[str, str]], p: SilentParams, lost: _Roots) -> set[int]:
    """The traces with a span of an eligible name that has a large enough hole, no child in
    another unit and no root of another unit starting in the hole (``lost``): the only traces
    the search for holes can report from.

    The spans of those names, and their children, are picked out by a comprehension each;
    only they are looked at one by one. The roots are checked here rather than in the walk
    over the traces: where workers lost their context (the usual reason for a hole where a
    worker's span belongs) nearly every hole has such a root, and the trace need not be walked.
    """
    names = {name for _, name in eligible}
    dispatchers = [s for s in named(spans, names) if (s.unit.service, s.name) in eligible]
    ids = {s.span_id for s in dispatchers}
    kids: dict[int, list[Span]] = defaultdict(list)
    for c in [c for c in spans if c.parent_span_id in ids]:
        kids[c.parent_span_id].append(c)
    out: set[int] = set()
    for s in dispatchers:
        duration = s.end - s.start
        # A hole lies within its span: a span shorter than the shortest hole has none.
        if duration <= 0 or duration < p.hole_min_ns:
            continue
        children: list[Span] = []
        mine = kids.get(s.span_id)
        if mine:
            unit = s.unit
            children = [c for c in mine if c.trace_id == s.trace_id]
            # A child in the span's own unit (most) is not foreign: one identity test.
            if any(c.unit is not unit and foreign(c.unit, unit) for c in children):
                continue
        start, end, _, _ = largest_hole(s, children)
        if end - start < p.hole_min_ns or end - start < p.hole_share * duration:
            continue
        if not lost.foreign_root_within(s, start, end):
            out.add(s.trace_id)
    return out


def _filled(ordered: list[Span], workers_of: dict[int, set[int]]) -> dict[tuple[str, str, tuple[str, str]], _Filled]:
    """Where workers' spans sit under their dispatchers: per (service, name, place), how often,
    how long, and the first such worker (``ordered``: traces in trace order)."""
    filled: dict[tuple[str, str, tuple[str, str]], _Filled] = defaultdict(_Filled)
    for trace in traces(ordered):
        here = {id(u) for u in map(UNIT, trace)}
        if len(here) == 1 or not any(workers_of[u] & here for u in here):
            continue
        by_id = index(trace)
        found: dict[int, list[Span]] = defaultdict(list)
        for c in trace:
            parent = by_id.get(c.parent_span_id)
            if parent is not None and c.unit is not parent.unit and id(c.unit) in workers_of[id(parent.unit)]:
                found[parent.span_id].append(c)
        for pid, ws in found.items():
            parent = by_id[pid]
            own = [c for c in trace if c.parent_span_id == pid and not foreign(c.unit, parent.unit)]
            for w in ws:
                f = filled[(parent.unit.service, parent.name, slot_of(w, own))]
                f.count += 1
                f.durations.append(w.duration)
                f.worker = f.worker or w
    return filled


def find_silent_dispatches(
    spans: Sequence[Span],
    p: SilentParams = DEFAULT,
    *,
    workers: WorkerChildren | None = None,
    roots: Iterable[Span] | None = None,
    unsettled: list[Span] | None = None,
) -> list[SilentDispatch]:
    """Spans with a hole where, in their peers, a worker's span sits; most confident first.

    Two walks over the traces (``traces.py``): the first, over the traces ``workers`` kept (run
    here when not given), finds where workers' spans sit under their dispatchers; the second
    looks for holes only in the traces with spans of the names that have such places often
    enough to be evidence, and with a hole (most names have none, and most traces are skipped).
    ``roots``: the dump's root spans, and ``unsettled``: the spans of ``workers.unsettled`` in
    trace order (``subset``), when the caller has them.
    """
    if workers is None:
        workers = WorkerChildren(spans)
        flag(spans, workers)
    # The places are only needed for the holes found, and most dumps have none: first the names
    # that could be eligible (each has at least ``min_filled`` worker spans under it, counted by
    # the filter, plus those of the traces it could not settle), then the holes in spans of those
    # names, and only if there are any, the places themselves. A name that is not eligible after
    # all has no place filled often enough, and its holes are dropped below.
    possible = Counter(workers.edges)
    if unsettled is None:
        unsettled = subset(spans, workers.unsettled)
    for (svc, name, _), f in _filled(unsettled, workers.workers_of).items():
        possible[(svc, name)] += f.count
    eligible = {k for k, n in possible.items() if n >= p.min_filled}
    if not eligible:
        return []
    names = {name for _, name in eligible}
    if roots is None:
        roots = [s for s in spans if not s.parent_span_id]
    lost = _Roots(roots, {svc for svc, _ in eligible})
    holes: dict[tuple[str, str, tuple[str, str]], list[_Hole]] = defaultdict(list)
    for trace in traces(subset(spans, _with_holes(spans, eligible, p, lost))):
        if names.isdisjoint(map(NAME, trace)):
            continue
        dispatchers = [s for s in trace if s.name in names and (s.unit.service, s.name) in eligible]
        if not dispatchers:
            continue
        for s in dispatchers:
            children = [c for c in trace if c.parent_span_id == s.span_id]
            if s.duration <= 0 or any(foreign(c.unit, s.unit) for c in children):
                continue
            start, end, before, after = largest_hole(s, children)
            if end - start < p.hole_min_ns or end - start < p.hole_share * s.duration:
                continue
            # Spans of another unit in this trace during the hole: the worker did export (its
            # parent went missing instead), so this is a lost parent, not a silent worker.
            if any(foreign(o.unit, s.unit) and o.start < end and o.end > start for o in trace):
                continue
            # A root of another unit starting in the hole: the worker exported into a trace of its
            # own (lost context: an orphan), not nothing. (``_with_holes`` kept the trace for
            # another span's hole.)
            if lost.foreign_root_within(s, start, end):
                continue
            holes[(s.unit.service, s.name, (before, after))].append(_Hole(s, start, end, (before, after)))
    if not holes:
        return []
    filled = _filled(subset(spans, workers.traces), workers.workers_of)
    out: list[SilentDispatch] = []
    for key, members in holes.items():
        fill = filled.get(key)
        worker = fill.worker if fill is not None else None
        if fill is None or worker is None or fill.count < p.min_filled:
            continue
        typical = sorted(fill.durations)[len(fill.durations) // 2]
        rel = relation(worker.unit, members[0].span.unit)
        bnd, bnd_why = boundary(worker.unit, members[0].span.unit, rel) if rel else (Boundary.PROCESS, "")
        for h in members:
            logit = p.prior + p.w_filled * min(math.log2(fill.count), p.filled_cap)
            before, after = h.slot
            where = f"between {before!r} and {after!r}" if before != START or after != END else "its whole body"
            why = [
                f"{(h.end - h.start) / MS:.1f} ms ({(h.end - h.start) / h.span.duration:.0%} of the span) {where} "
                "holds no span",
                f"in {fill.count} other {h.span.name!r} spans that place holds {worker.name!r} from another unit "
                f"({worker.unit.label()}; {bnd_why or bnd.value})",
            ]
            ratio = (h.end - h.start) / max(typical, 1)
            if 1 / p.dur_ratio <= ratio <= p.dur_ratio:
                logit += p.w_duration
                why.append(f"the hole lasts {ratio:.1f}x the typical {worker.name!r} ({typical / MS:.1f} ms)")
            else:
                logit += p.w_duration_mismatch
            if len(members) >= p.min_recur:
                logit += p.w_recur
                why.append(f"{len(members)} {h.span.name!r} spans have this hole at this place")
            conf = _sigmoid(logit)
            if conf >= p.threshold:
                fix = silent_fix(worker.unit.language or h.span.unit.language)
                out.append(SilentDispatch(h.span, bnd, h.start, h.end, conf, tuple(why), fix))
    out.sort(key=lambda d: (-d.confidence, d.span.start))
    return out
