"""The diagnosis: pure functions from spans to a ``Report``. No I/O, no printing."""

from __future__ import annotations

import gc
from collections.abc import Sequence

from ctxdoctor.diagnose.gaps import group_gaps
from ctxdoctor.diagnose.leaks import LateChildren, find_leaks
from ctxdoctor.diagnose.missing import find_missing_parents, group_lost_parents
from ctxdoctor.diagnose.orphans import ModelParams, find_orphans
from ctxdoctor.diagnose.silent import WorkerChildren, find_silent_dispatches
from ctxdoctor.diagnose.traces import NOWHERE, flag
from ctxdoctor.findings import Report, Settings, Summary
from ctxdoctor.model import Span

_SLICE = 1 << 16


class _UnfoundParents:
    """The parent ids not found in their own slice (``traces.Filter``): the absent parents'
    candidates, from the lookups ``flag`` makes anyway, with no set of a slice's ids."""

    def __init__(self) -> None:
        self.traces: set[int] = set()
        self.unsettled: set[int] = set()
        self.candidates: set[int] = set()
        self.spans = 0  # the spans of the slices seen: ``flag`` skips a slice with a repeated id

    def __call__(self, part: list[Span], parents: list[Span]) -> None:
        self.spans += len(part)
        self.candidates.update([s.parent_span_id for s, q in zip(part, parents, strict=True) if q is NOWHERE])


def _absent_parents(spans: Sequence[Span], unfound: _UnfoundParents | None = None) -> set[int]:
    """The parent ids that never arrived: every referenced parent, less every span present.

    A parent is nearly always exported near its children (the same batch, or one soon after), so
    each slice of spans first drops the parents present in the slice itself (``unfound``, when it
    saw every slice). Only the few left are looked for in the whole dump: a few hundred
    candidates instead of a set of every parent (whose growth would be the diagnosis's peak
    memory), and small sets are faster too.
    """
    candidates: set[int] = set()
    if unfound is not None and unfound.spans == len(spans):
        candidates = unfound.candidates
    else:
        for i in range(0, len(spans), _SLICE):
            part = spans[i : i + _SLICE]
            local = {s.parent_span_id for s in part}
            local.difference_update([s.span_id for s in part])
            candidates |= local
    candidates.discard(0)  # a root's
    for i in range(0, len(spans), _SLICE):
        if not candidates:
            break
        candidates.difference_update([s.span_id for s in spans[i : i + _SLICE]])
    return set(candidates)  # a set keeps its table when it shrinks: copy the few left


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
    # The leak and silent-worker passes' traces, and the absent parents' candidates, picked in
    # one pass over the dump, which counts the traces too.
    late, workers, unfound = LateChildren(), WorkerChildren(spans), _UnfoundParents()
    traces = flag(spans, late, workers, unfound)
    absent = _absent_parents(spans, unfound)
    root_spans = [s for s in spans if not s.parent_span_id]
    roots = len(root_spans)
    missing = find_missing_parents(spans, absent, root_spans)
    candidates, group_sizes = find_orphans(spans, model, units=workers.units, roots=root_spans)
    flagged = [o for o in candidates if o.confidence >= settings.min_confidence]
    # Allow rules accept roots a team has reviewed as legitimate; they leave the statistics above
    # untouched and only keep those roots out of the findings and the ratio.
    orphans = [o for o in flagged if not any(a.matches(o.span.unit.service, o.span.name) for a in settings.allow)]
    gaps = group_gaps(orphans, group_sizes)
    missing_groups = {(m.span.trace_id, m.span.parent_span_id) for m in missing}
    lost_groups = {(m.span.trace_id, m.span.parent_span_id) for m in missing if m.lost}
    leaks = [lk for lk in find_leaks(spans, late_children=late) if lk.confidence >= settings.min_confidence]
    silent = find_silent_dispatches(spans, workers=workers, roots=root_spans)
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
