"""The diagnosis: pure functions from spans to a ``Report``. No I/O, no printing."""

from __future__ import annotations

import gc
from collections.abc import Sequence

from ctxdoctor.diagnose.gaps import group_gaps
from ctxdoctor.diagnose.leaks import LateChildren, find_leaks
from ctxdoctor.diagnose.missing import find_missing_parents, group_lost_parents
from ctxdoctor.diagnose.orphans import ModelParams, find_orphans
from ctxdoctor.diagnose.silent import WorkerChildren, find_silent_dispatches
from ctxdoctor.diagnose.traces import Slice, by_trace, flag
from ctxdoctor.findings import Report, Settings, Summary
from ctxdoctor.model import Span

_SLICE = 1 << 16


class _Unparented:
    """The roots, and the spans whose parent is not in their own slice (``traces.Filter``), in
    dump order: from the lookups ``flag`` makes anyway. A span whose parent never arrived is
    among them, so the roots, the absent parents' candidates and the spans under an absent
    parent are picked from these instead of from every span."""

    def __init__(self) -> None:
        self.traces: set[int] = set()
        self.unsettled: set[int] = set()
        self.spans: list[Span] = []
        self.seen = 0  # the spans of the slices seen: ``flag`` skips a slice with a repeated id

    def __call__(self, found: Slice) -> None:
        self.seen += found.size
        self.spans += found.alone

    def saw(self, spans: Sequence[Span]) -> bool:
        """Whether every span of ``spans`` went through this filter."""
        return self.seen == len(spans)


def _absent_parents(
    spans: Sequence[Span], unparented: _Unparented | None = None, traces: set[int] | None = None
) -> tuple[set[int], list[Span]]:
    """The parent ids that never arrived (every referenced parent, less every span present),
    and the spans of ``traces`` in trace order (``traces.subset``), picked in the same pass.

    A parent is nearly always exported near its children (the same batch, or one soon after), so
    each slice of spans first drops the parents present in the slice itself (``unparented``,
    when it saw every slice). Only the few left are looked for in the whole dump: a few hundred
    candidates instead of a set of every parent (whose growth would be the diagnosis's peak
    memory), and small sets are faster too. That pass picks the spans of ``traces`` as well: a
    second pass over every span would cost about as much again.
    """
    candidates: set[int] = set()
    if unparented is not None and unparented.saw(spans):
        candidates = {s.parent_span_id for s in unparented.spans}
    else:
        for i in range(0, len(spans), _SLICE):
            part = spans[i : i + _SLICE]
            local = {s.parent_span_id for s in part}
            local.difference_update([s.span_id for s in part])
            candidates |= local
    candidates.discard(0)  # a root's
    if traces:
        picked = [s for s in spans if s.span_id in candidates or s.trace_id in traces]
        candidates.difference_update([s.span_id for s in picked])
        return set(candidates), by_trace([s for s in picked if s.trace_id in traces])
    for i in range(0, len(spans), _SLICE):
        if not candidates:
            break
        # Only the ids found are kept in a list: building a list of every id costs more.
        candidates.difference_update([s.span_id for s in spans[i : i + _SLICE] if s.span_id in candidates])
    return set(candidates), []  # a set keeps its table when it shrinks: copy the few left


def diagnose(
    spans: Sequence[Span],
    settings: Settings | None = None,
    *,
    warnings: Sequence[str] = (),
    files: Sequence[str] = (),
    model: ModelParams | None = None,
) -> Report:
    """Find context-loss roots, missing parents, the gaps they form, context leaks and silent
    dispatches.

    The orphan ratio is ``broken fragments / fragments``: the traces fell into ``fragments``
    pieces (every root, plus every distinct parent that is missing, plus every span that leaked
    under the wrong parent), of which the suspected orphans, the lost parents and the leaked
    spans are broken off from where they belong. Missing parents that are merely upstream
    callers exporting elsewhere are fragments, but not broken ones. Silent dispatches are
    reported but not counted: nothing arrived, so there is no fragment to count.

    One process: searching in forked children saves little time and costs memory for every span,
    because a child that reads the spans copies their pages (CPython writes reference counts into
    the objects). bench/README.md has the figures.
    """
    # The passes allocate a few million objects (candidates, lists of spans, dicts) and free
    # them together, with no cycle among them: the cyclic collector would only walk the dump's
    # big lists again and again for nothing.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        return _diagnose(spans, settings, warnings=warnings, files=files, model=model)
    finally:
        if gc_was_on:
            gc.enable()


def _diagnose(
    spans: Sequence[Span],
    settings: Settings | None,
    *,
    warnings: Sequence[str],
    files: Sequence[str],
    model: ModelParams | None,
) -> Report:
    settings = settings or Settings()
    # The leak and silent-worker passes' traces, and the spans without a parent at hand, picked
    # in one pass over the dump, which counts the traces too.
    late, workers, unparented = LateChildren(), WorkerChildren(spans), _Unparented()
    traces = flag(spans, late, workers, unparented)
    # The leak pass walks the traces with late children. ``flag`` gives every filter the traces
    # the slices could not settle, so those hold the ones the silent pass needs first too.
    absent, late_spans = _absent_parents(spans, unparented, late.traces)
    # Every root, and every span under an absent parent, is among the spans without a parent in
    # their slice.
    parentless = unparented.spans if unparented.saw(spans) else spans
    root_spans = [s for s in parentless if not s.parent_span_id]
    roots = len(root_spans)
    missing = find_missing_parents(parentless, absent, root_spans)
    del parentless
    unparented.spans = []  # a list as long as the roots: not held through the rest of the diagnosis
    candidates, group_sizes = find_orphans(spans, model, units=workers.units, roots=root_spans)
    flagged = [o for o in candidates if o.confidence >= settings.min_confidence]
    # Allow rules accept roots a team has reviewed as legitimate; they leave the statistics above
    # untouched and only keep those roots out of the findings and the ratio.
    orphans = [o for o in flagged if not any(a.matches(o.span.unit.service, o.span.name) for a in settings.allow)]
    gaps = group_gaps(orphans, group_sizes)
    missing_groups = {(m.span.trace_id, m.span.parent_span_id) for m in missing}
    lost_groups = {(m.span.trace_id, m.span.parent_span_id) for m in missing if m.lost}
    unsettled = [s for s in late_spans if s.trace_id in workers.unsettled]
    leaks = find_leaks(spans, late_children=late, ordered=late_spans)
    leaks = [lk for lk in leaks if lk.confidence >= settings.min_confidence]
    silent = find_silent_dispatches(spans, workers=workers, roots=root_spans, unsettled=unsettled)
    silent = [d for d in silent if d.confidence >= settings.min_confidence]
    fragments = roots + len(missing_groups) + len(leaks)
    broken = len(orphans) + len(lost_groups) + len(leaks)
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
        leaked_spans=len(leaks),
        silent_dispatches=len(silent),
    )
    return Report(
        summary=summary,
        orphans=tuple(orphans),
        missing_parents=tuple(missing),
        gaps=tuple(gaps),
        settings=settings,
        warnings=tuple(warnings),
        files=tuple(files),
        lost_groups=group_lost_parents(missing),
        leaks=tuple(leaks),
        silent_dispatches=tuple(silent),
    )
