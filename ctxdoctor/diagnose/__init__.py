"""The diagnosis: pure functions from spans to a ``Report``. No I/O, no printing."""

from __future__ import annotations

from collections.abc import Sequence

from ctxdoctor.diagnose.gaps import group_gaps
from ctxdoctor.diagnose.missing import find_missing_parents
from ctxdoctor.diagnose.orphans import ModelParams, find_orphans
from ctxdoctor.findings import Report, Settings, Summary
from ctxdoctor.model import Span

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


def diagnose(
    spans: Sequence[Span],
    settings: Settings | None = None,
    *,
    warnings: Sequence[str] = (),
    files: Sequence[str] = (),
    model: ModelParams | None = None,
) -> Report:
    """Find context-loss roots, missing parents and the gaps they form.

    The orphan ratio is ``broken fragments / fragments``: the traces fell into ``fragments``
    pieces (every root, plus every distinct parent that is missing), of which the suspected
    orphans and the lost parents are broken off from where they belong. Missing parents that
    are merely upstream callers exporting elsewhere are fragments, but not broken ones.

    One process: a forked search (session 2) saved ~0.2 s of ~1.3 at a million spans, and cost
    ~270 bytes per span, because a child that reads the spans copies their pages (CPython writes
    reference counts into the objects). bench/README.md has the figures.
    """
    settings = settings or Settings()
    absent = _absent_parents(spans)
    traces = len({s.trace_id for s in spans})
    root_spans = [s for s in spans if s.parent_span_id == 0]
    roots = len(root_spans)
    missing = find_missing_parents(spans, absent, root_spans)
    candidates, group_sizes = find_orphans(spans, model)
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
