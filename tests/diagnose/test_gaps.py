"""Orphans grouped into gaps: one per place in the code to fix (hand-made orphans, labelled as such)."""

from __future__ import annotations

from ctxdoctor.diagnose.gaps import group_gaps
from ctxdoctor.findings import Orphan
from ctxdoctor.model import Span, Unit
from ctxdoctor.units import Boundary

UNIT = Unit(service="svc", resource=0, pid=1, language="nodejs")


def _span(sid: int, name: str) -> Span:
    return Span(trace_id=sid, span_id=sid, parent_span_id=0, name=name, kind=1, start=sid, end=sid + 1, flags=0,
                unit=UNIT)


def _orphan(sid: int, parent: str, name: str) -> Orphan:
    return Orphan(span=_span(sid, name), parent=_span(1000 + sid, parent), boundary=Boundary.PROCESS,
                  boundary_evidence="", confidence=0.9, parent_confidence=1.0, candidates=1)


def test_dispatchers_named_after_their_item_are_one_gap_named_by_their_shape() -> None:
    # A test case per item ("hash_files handles item 4") dispatching the same work: one place in
    # the code, not one gap per test case.
    orphans = [_orphan(i, f"hash_files handles item {i}", "transform") for i in range(6)]
    (gap,) = group_gaps(orphans, {("svc", "transform"): 8})
    assert (gap.parent_name, gap.orphan_name, gap.occurrences, gap.roots_with_name) == (
        "hash_files handles item #", "transform", 6, 8)


def test_roots_named_after_their_item_are_counted_over_the_shape() -> None:
    orphans = [_orphan(i, "process_data", f"job {i}") for i in range(3)]
    (gap,) = group_gaps(orphans, {("svc", f"job {i}"): 1 for i in range(5)})
    assert (gap.parent_name, gap.orphan_name, gap.roots_with_name) == ("process_data", "job #", 5)


def test_different_code_stays_apart() -> None:
    orphans = [_orphan(1, "process_data", "transform"), _orphan(2, "resize_image", "transform")]
    assert sorted(g.parent_name for g in group_gaps(orphans, {})) == ["process_data", "resize_image"]
