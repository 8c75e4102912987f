"""Spans whose parent never arrived, and whether that parent was lost or simply lives elsewhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ctxdoctor.findings import LostGroup, MissingParent
from ctxdoctor.fixes import flush_fix
from ctxdoctor.model import ENTRY_KINDS, Span, span_hex


def find_missing_parents(spans: Sequence[Span], absent: set[int], root_spans: Sequence[Span]) -> list[MissingParent]:
    """Every span whose ``parent_span_id`` is in ``absent`` (named, but not in the dump).

    A missing *local* parent was in the same SDK as the child and never exported: the worker or
    process exited before its span processor flushed, or the span was never ended. A missing
    *remote* parent is usually an upstream that exports elsewhere (informational), unless the
    rest of the trace did arrive here, in which case the upstream exports here and lost it.
    """
    heads = [s for s in spans if s.parent_span_id in absent] if absent else []
    if not heads:
        return []
    siblings = Counter((s.trace_id, s.parent_span_id) for s in heads)
    # The first root of each trace with a missing parent: those few, not a map of every trace.
    head_traces = {s.trace_id for s in heads}
    roots_by_trace: dict[int, Span] = {}
    for r in root_spans:
        if r.trace_id in head_traces:
            roots_by_trace.setdefault(r.trace_id, r)
    classified = []
    for s in heads:
        recorded = s.parent_remote
        if recorded is None:
            classified.append((s, s.kind in ENTRY_KINDS, "inferred"))
        else:
            classified.append((s, recorded, "flags"))
    # A trace with a lost local parent is produced (partly) by processes that export here.
    local_loss = {s.trace_id for s, remote, _ in classified if not remote}
    out: list[MissingParent] = []
    for s, remote, source in classified:
        pid = span_hex(s.parent_span_id)
        n = siblings[(s.trace_id, s.parent_span_id)]
        lang = s.unit.language
        if not remote:
            how = (
                "the SDK recorded a local parent"
                if source == "flags"
                else "a non-entry span kind implies a local parent"
            )
            reason = (
                f"parent {pid} was in the same SDK as this span ({how}) and was never exported: the "
                f"worker or process ({s.unit.label()}) most likely exited before its span processor "
                "flushed, or the parent span was never ended"
            )
            out.append(MissingParent(s, False, source, True, reason, n, flush_fix(lang)))
            continue
        root = roots_by_trace.get(s.trace_id)
        if root is not None or s.trace_id in local_loss:
            seen = (
                f"its root {root.name!r} ({root.unit.service})"
                if root is not None
                else "another fragment with a lost local parent"
            )
            reason = (
                f"parent {pid} is remote, but the rest of this trace arrived here ({seen}), so the "
                "process that made the parent exports here and lost it: a worker or process exited "
                "without flushing, or never ended the dispatching span"
            )
            out.append(MissingParent(s, True, source, True, reason, n, flush_fix(lang)))
        else:
            reason = (
                f"parent {pid} is remote and nothing else of this trace is here: an upstream caller "
                "that does not export to this collector (informational)"
            )
            out.append(MissingParent(s, True, source, False, reason, n))
    out.sort(key=lambda m: (not m.lost, m.span.unit.service, m.span.start))
    return out


def group_lost_parents(missing: Sequence[MissingParent]) -> tuple[LostGroup, ...]:
    """Lost parents grouped by (service, span name, parent remote), largest group first."""
    groups: dict[tuple[str, str, bool], list[MissingParent]] = {}
    for m in missing:
        if m.lost:
            groups.setdefault((m.span.unit.service, m.span.name, m.parent_remote), []).append(m)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return tuple(LostGroup(service, name, remote, tuple(members)) for (service, name, remote), members in ordered)
