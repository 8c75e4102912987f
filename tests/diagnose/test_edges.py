"""Hand-made edge cases for the diagnosis (labelled as such: the recorded real-SDK scenarios are
in tests/diagnose/test_scenarios.py). Each pins one rule of evidence, stated in the test's name."""

from __future__ import annotations

import gc
import random

import pytest

import ctxdoctor.diagnose as diagnose_module
from ctxdoctor.diagnose import diagnose
from ctxdoctor.model import FLAG_IS_REMOTE_KNOWN, FLAG_PARENT_IS_REMOTE, Span, SpanKind, Unit
from ctxdoctor.readers import read_paths
from ctxdoctor.units import Boundary, Relation, boundary, relation
from tests.helpers import SCENARIOS, shuffled

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000
LOCAL = FLAG_IS_REMOTE_KNOWN
REMOTE = FLAG_IS_REMOTE_KNOWN | FLAG_PARENT_IS_REMOTE


def span(
    trace: int,
    sid: int,
    name: str,
    start_ms: float,
    end_ms: float,
    unit: Unit,
    *,
    parent: int = 0,
    kind: int = SpanKind.INTERNAL,
    flags: int = LOCAL,
    links: tuple[int, ...] = (),
) -> Span:
    return Span(trace, sid, parent, name, kind, T0 + int(start_ms * MS), T0 + int(end_ms * MS), flags, unit, links)


def dispatching_app(unit_main: Unit, unit_worker: Unit, n: int = 20, *, link: bool = False) -> list[Span]:
    """Requests whose handler waits for work that runs, without its context, in another unit."""
    spans = []
    for i in range(n):
        t = i * 50.0
        req, work = 1000 + i, 5000 + i
        spans.append(span(req, req, "GET /x", t, t + 30, unit_main, kind=SpanKind.SERVER))
        spans.append(span(req, req + 100_000, "handle", t + 1, t + 29, unit_main, parent=req))
        spans.append(span(work, work, "crunch", t + 2, t + 28.5, unit_worker, links=(req,) if link else ()))
    return spans


MAIN = Unit("svc", 0, pid=10, thread_id=1, language="python")
WORKER = Unit("svc", 1, pid=10, thread_id=2, language="python")


def test_work_handed_to_another_thread_is_found() -> None:
    rep = diagnose(dispatching_app(MAIN, WORKER))
    assert rep.summary.suspected_orphans == 20
    (gap,) = rep.gaps
    assert (gap.parent_name, gap.orphan_name, gap.boundary, gap.runtime) == (
        "handle",
        "crunch",
        Boundary.THREAD,
        "python",
    )


def test_a_root_linked_to_its_origin_was_started_as_a_new_trace_on_purpose() -> None:
    assert diagnose(dispatching_app(MAIN, WORKER, link=True)).summary.suspected_orphans == 0


def test_entry_point_roots_are_never_suspects() -> None:
    spans = [
        s
        if s.name != "crunch"
        else Span(s.trace_id, s.span_id, 0, s.name, SpanKind.CONSUMER, s.start, s.end, s.flags, s.unit)
        for s in dispatching_app(MAIN, WORKER)
    ]
    assert diagnose(spans).summary.suspected_orphans == 0


def concurrent_jobs(units: list[Unit], n: int = 600) -> list[Span]:
    """A batch system: many long INTERNAL jobs started in a burst, all legitimately roots."""
    rnd = random.Random(7)
    spans = []
    for i in range(n):
        start = rnd.randint(0, 1000)
        unit = units[i % len(units)]
        spans.append(span(i + 1, i + 1, f"job-{i % 7}", start, start + 5000, unit))
        spans.append(span(i + 1, 10**6 + i, "step", start + 0.001, start + 2, unit, parent=i + 1))
    return spans


def test_concurrent_jobs_in_one_unit_are_legitimate_roots() -> None:
    assert diagnose(concurrent_jobs([MAIN])).summary.suspected_orphans == 0


def test_concurrent_jobs_over_several_worker_threads_are_legitimate_roots() -> None:
    assert diagnose(concurrent_jobs([MAIN, WORKER])).summary.suspected_orphans == 0


def test_missing_parents_local_remote_lost_and_informational() -> None:
    u = Unit("svc", 0, pid=1, language="nodejs")
    spans = [
        # local parent recorded by the SDK, never exported: lost
        span(1, 11, "parse_rows", 0, 1, u, parent=99, flags=LOCAL),
        span(1, 12, "validate_rows", 1, 2, u, parent=99, flags=LOCAL),
        # remote parent, but the trace's root is here: lost
        span(2, 20, "GET /a", 0, 10, u, kind=SpanKind.SERVER),
        span(2, 21, "worker_task", 1, 9, u, parent=98, flags=REMOTE),
        # remote parent and nothing else of the trace: an upstream exporting elsewhere
        span(3, 31, "GET /b", 0, 10, u, parent=97, kind=SpanKind.SERVER, flags=REMOTE),
        # no flags: a SERVER span's missing parent is taken as remote
        span(4, 41, "GET /c", 0, 10, u, parent=96, kind=SpanKind.SERVER, flags=0),
    ]
    rep = diagnose(spans)
    by_name = {m.span.name: m for m in rep.missing_parents}
    assert (by_name["parse_rows"].parent_remote, by_name["parse_rows"].lost) == (False, True)
    assert by_name["parse_rows"].siblings == 2
    assert (by_name["worker_task"].parent_remote, by_name["worker_task"].lost) == (True, True)
    assert (by_name["GET /b"].parent_remote, by_name["GET /b"].lost) == (True, False)
    assert (by_name["GET /c"].parent_remote, by_name["GET /c"].remote_source) == (True, "inferred")
    # Lost: parents 99 and 98. Fragments: the one root (GET /a) and the four missing parents.
    assert rep.summary.lost_parents == 2
    assert rep.summary.fragments == 1 + 4  # one root, four distinct missing parents
    assert rep.summary.orphan_ratio == 2 / 5


def test_boundaries_from_units() -> None:
    a = Unit("svc", 0, pid=1, thread_id=1, language="nodejs")
    b = Unit("svc", 1, pid=1, thread_id=2, language="nodejs")
    c = Unit("svc", 2, pid=2, parent_pid=1, language="python")
    node_same = Unit("svc", 3, pid=5, language="nodejs")
    py_same = Unit("svc", 4, language="python")
    assert boundary(b, a, Relation.SAME_PROCESS)[0] is Boundary.THREAD
    assert relation(c, a) is Relation.PARENT_CHILD_PROCESS
    assert boundary(c, a, Relation.PARENT_CHILD_PROCESS)[0] is Boundary.PROCESS
    assert boundary(node_same, node_same, Relation.SAME_PROCESS)[0] is Boundary.ASYNC
    assert boundary(py_same, py_same, Relation.SAME_PROCESS)[0] is Boundary.THREAD
    assert relation(Unit("other", 9, pid=3), a) is None


@pytest.mark.parametrize("slice_size", [1, 2, 3, 7, 50, 1 << 16])
@pytest.mark.parametrize("scenario", ["python-exit-unflushed", "node-worker-exit-unflushed", "python-mixed-c32"])
def test_absent_parents_are_the_same_whatever_the_slices(
    monkeypatch: pytest.MonkeyPatch, scenario: str, slice_size: int
) -> None:
    """Parents are first looked for in their own slice, then the few left in the whole dump: a
    parent in another slice, before or after, must still count as present."""
    spans = read_paths([SCENARIOS / scenario / "dump.json"]).spans
    monkeypatch.setattr(diagnose_module, "_SLICE", slice_size)
    for order in shuffled(spans, 4):
        expected = {s.parent_span_id for s in order if s.parent_span_id} - {s.span_id for s in order}
        assert diagnose_module._absent_parents(order) == (expected, [])
    if "unflushed" in scenario:
        assert expected  # these dumps do miss parents
    assert diagnose_module._absent_parents([]) == (set(), [])


@pytest.mark.parametrize("enabled", [True, False])
def test_the_diagnosis_leaves_the_cyclic_collector_as_it_found_it(enabled: bool) -> None:
    main, worker = Unit("svc", 0, thread_id=1), Unit("svc", 0, thread_id=2)
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        diagnose(dispatching_app(main, worker))
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
