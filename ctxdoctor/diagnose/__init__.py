"""The diagnosis: pure functions from spans to a ``Report``. No I/O, no printing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ctxdoctor.diagnose.gaps import group_gaps
from ctxdoctor.diagnose.missing import find_missing_parents
from ctxdoctor.diagnose.orphans import find_orphans, plan_search, ranked, search
from ctxdoctor.findings import Orphan, Report, Settings, Summary
from ctxdoctor.forked import CAN_FORK, Call, memory_to_spare
from ctxdoctor.model import Span

#: Below this many spans the diagnosis takes well under a second: not worth a process.
PARALLEL_MIN_SPANS = 200_000


def diagnose(
    spans: Sequence[Span],
    settings: Settings | None = None,
    *,
    warnings: Sequence[str] = (),
    files: Sequence[str] = (),
    jobs: int = 1,
) -> Report:
    """Find context-loss roots, missing parents and the gaps they form.

    The orphan ratio is ``broken fragments / fragments``: the traces fell into ``fragments``
    pieces (every root, plus every distinct parent that is missing), of which the suspected
    orphans and the lost parents are broken off from where they belong. Missing parents that
    are merely upstream callers exporting elsewhere are fragments, but not broken ones.
    """
    settings = settings or Settings()
    if jobs <= 1 or not CAN_FORK or len(spans) < PARALLEL_MIN_SPANS or not memory_to_spare(2.0):
        return _diagnose(spans, settings, warnings, files, lambda: find_orphans(spans))
    # The context-loss search is most of the time and splits into independent partitions: a
    # forked process searches most of them while this one finds the missing parents and
    # searches the rest. The same functions on the same spans, merged in the same order, so the
    # report is the same. The price is memory: the child copies the pages of the spans it touches
    # (copy-on-write), nearly as much again as the spans take, so only when that is to spare.
    plan = plan_search(spans)
    theirs, ours = _split(plan.weights(), _FORKED_SHARE)
    try:
        call = Call(search, plan, theirs)
    except OSError:  # no process to be had: search here, with the plan already made
        everything = range(len(plan.parts))
        return _diagnose(spans, settings, warnings, files, lambda: (ranked(search(plan, everything)), plan.group_sizes))
    try:

        def both() -> tuple[list[Orphan], dict[tuple[str, str], int]]:
            found = dict(zip(ours, search(plan, ours), strict=True))
            found.update(zip(theirs, call.join(), strict=True))
            return ranked(found[i] for i in range(len(plan.parts))), plan.group_sizes

        return _diagnose(spans, settings, warnings, files, both)
    finally:
        call.close()


#: The forked process's share of the search. This one also finds the missing parents, which at a
#: million spans takes nearly as long as the search (the child in turn pays for the pages it
#: copies); at 0.8 the child was measured waiting for this one.
_FORKED_SHARE = 0.9


def _split(weights: list[int], share: float) -> tuple[list[int], list[int]]:
    """Partition indices for the forked process (about ``share`` of the weight) and for this one."""
    target = share * sum(weights)
    theirs: list[int] = []
    ours: list[int] = []
    taken = 0
    for i in sorted(range(len(weights)), key=lambda k: -weights[k]):
        if taken + weights[i] <= target or not theirs:
            theirs.append(i)
            taken += weights[i]
        else:
            ours.append(i)
    return sorted(theirs), sorted(ours)


_SLICE = 1 << 16


def _absent_parents(spans: Sequence[Span]) -> set[int]:
    """The parent ids that never arrived: every referenced parent, less every span present.

    A parent is nearly always exported near its children (the same batch, or one soon after), so
    each slice of spans first drops the parents present in the slice itself. Only the few left
    are looked for in the whole dump. At a million spans that is ~250 candidates against ~560k
    parents: no set of every parent (its growth was the diagnosis's peak memory, ~25 MB), and
    small sets are faster too. The sets' own loops run in C over each slice's list of ids.
    """
    candidates: set[int] = set()
    for i in range(0, len(spans), _SLICE):
        part = spans[i : i + _SLICE]
        local = {s.parent_span_id for s in part if s.parent_span_id}
        local.difference_update([s.span_id for s in part])
        candidates |= local
    for i in range(0, len(spans), _SLICE):
        if not candidates:
            break
        candidates.difference_update([s.span_id for s in spans[i : i + _SLICE]])
    return set(candidates)  # a set keeps its table when it shrinks: copy the few left


def _diagnose(
    spans: Sequence[Span],
    settings: Settings,
    warnings: Sequence[str],
    files: Sequence[str],
    search_orphans: Callable[[], tuple[list[Orphan], dict[tuple[str, str], int]]],
) -> Report:
    absent = _absent_parents(spans)
    traces = len({s.trace_id for s in spans})
    root_spans = [s for s in spans if s.parent_span_id == 0]
    roots = len(root_spans)
    missing = find_missing_parents(spans, absent, root_spans)
    candidates, group_sizes = search_orphans()
    flagged = [o for o in candidates if o.confidence >= settings.min_confidence]
    # Allow rules accept roots a team has reviewed as legitimate; they leave the statistics above
    # untouched and only keep those roots out of the findings and the ratio.
    orphans = [o for o in flagged if not any(a.matches(o.span.unit.service, o.span.name) for a in settings.allow)]
    gaps = group_gaps(orphans, group_sizes)
    missing_groups = {(m.span.trace_id, m.span.parent_span_id) for m in missing}
    lost_groups = {(m.span.trace_id, m.span.parent_span_id) for m in missing if m.lost}
    fragments = roots + len(missing_groups)
    broken = len(orphans) + len(lost_groups)
    summary = Summary(
        spans=len(spans),
        traces=traces,
        roots=roots,
        suspected_orphans=len(orphans),
        missing_parents=len(missing),
        lost_parents=len(lost_groups),
        fragments=fragments,
        broken_fragments=broken,
        orphan_ratio=broken / fragments if fragments else 0.0,
        allowed_roots=len(flagged) - len(orphans),
    )
    return Report(
        summary=summary,
        orphans=tuple(orphans),
        missing_parents=tuple(missing),
        gaps=tuple(gaps),
        settings=settings,
        warnings=tuple(warnings),
        files=tuple(files),
    )
