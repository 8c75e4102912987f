"""The roots and the spans under an absent parent come from the spans ``flag`` found without a
parent in their slice: the report is the one the passes over every span give."""

from __future__ import annotations

import random

import pytest

import ctxdoctor.diagnose as diagnose_module
import ctxdoctor.diagnose.traces as traces_module
from ctxdoctor.diagnose import diagnose
from ctxdoctor.model import Span, Unit
from ctxdoctor.readers import read_paths
from ctxdoctor.render.json_report import report_dict
from tests.helpers import SCENARIOS, shuffled


def _both(monkeypatch: pytest.MonkeyPatch, spans: list[Span]) -> tuple[dict[str, object], dict[str, object]]:
    """The report as diagnosed, and with every pass over the whole dump instead."""
    fast = report_dict(diagnose(spans))
    with monkeypatch.context() as m:
        m.setattr(diagnose_module._Unparented, "saw", lambda self, spans: False)
        slow = report_dict(diagnose(spans))
    return fast, slow


@pytest.mark.parametrize("slice_size", [1, 3, 50, 1 << 13])
@pytest.mark.parametrize("scenario", ["python-exit-unflushed", "node-worker-exit-unflushed", "python-mixed-c32"])
def test_the_same_report_whatever_the_slices(monkeypatch: pytest.MonkeyPatch, scenario: str, slice_size: int) -> None:
    spans = read_paths([SCENARIOS / scenario / "dump.json"]).spans
    monkeypatch.setattr(traces_module, "_SLICE", slice_size)
    for order in shuffled(spans, 3):
        fast, slow = _both(monkeypatch, order)
        assert fast == slow
    if "unflushed" in scenario:
        assert fast["missing_parents"]  # these dumps do miss parents


def test_a_span_of_id_zero_does_not_hide_the_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    """A root's parent id 0 is looked up like any other: a (malformed) span of id 0 in the same
    slice is found as its parent, and the root must still count as one."""
    unit = Unit("svc", 0, pid=1)
    zero = Span(1, 0, 0, "zero", 1, 0, 100, 0, unit)
    roots = [Span(t, 10 + t, 0, "root", 1, 10, 20, 0, unit) for t in (2, 3)]
    child = Span(2, 99, 77, "child", 1, 11, 12, 0, unit)  # under a parent that never arrived
    fast, slow = _both(monkeypatch, [zero, *roots, child])
    assert fast == slow
    assert fast["summary"]["roots"] == 3  # type: ignore[index]
    assert len(fast["missing_parents"]) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize("scenario", ["python-exit-unflushed", "node-worker-exit-unflushed"])
def test_the_absent_parents_pass_picks_the_traces_asked_for(scenario: str) -> None:
    """The last pass for the absent parents also picks the spans of some traces, as ``subset``."""
    spans = read_paths([SCENARIOS / scenario / "dump.json"]).spans
    expected = {s.parent_span_id for s in spans if s.parent_span_id} - {s.span_id for s in spans}
    trace_ids = sorted({s.trace_id for s in spans})
    rng = random.Random(3)
    for k in (1, 3, len(trace_ids)):
        wanted = set(rng.sample(trace_ids, k))
        absent, picked = diagnose_module._absent_parents(spans, None, wanted)
        assert absent == expected
        assert picked == traces_module.subset(spans, wanted)
