"""Each piece of the silent-dispatch model on hand-made spans (labelled as such: the recorded
real-SDK runs are in test_leak_fixtures.py). One test per piece of evidence or rule."""

from __future__ import annotations

from ctxdoctor.diagnose.silent import (
    DEFAULT,
    END,
    START,
    SilentParams,
    find_silent_dispatches,
    foreign,
    largest_hole,
    slot_of,
)
from ctxdoctor.model import Span, SpanKind, Unit
from ctxdoctor.units import Boundary

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000
MAIN = Unit(service="report-service", resource=0, pid=100, language="python")
WORKER = Unit(service="report-service", resource=1, pid=101, parent_pid=100, language="python")
_ids = iter(range(1, 1 << 30))


def span(name: str, start_ms: float, end_ms: float, *, trace: int, parent: Span | None = None, **kw: object) -> Span:
    fields: dict[str, object] = {"kind": SpanKind.INTERNAL, "flags": 0, "unit": MAIN, **kw}
    return Span(
        trace_id=trace,
        span_id=next(_ids),
        parent_span_id=parent.span_id if parent else 0,
        name=name,
        start=T0 + int(start_ms * MS),
        end=T0 + int(end_ms * MS),
        **fields,  # type: ignore[arg-type]
    )


def dispatch(trace: int, *, worker: Unit | None = WORKER, work_ms: float = 20, io_child: bool = False) -> list[Span]:
    """One ``export_report``: a query, then the worker's ``render_pdf`` (or nothing), then an upload."""
    base = trace * 100
    root = span("POST /reports", base, base + work_ms + 12, trace=trace, kind=SpanKind.SERVER)
    exp = span("export_report", base + 1, base + work_ms + 11, trace=trace, parent=root)
    out = [root, exp, span("SELECT rows", base + 2, base + 4, trace=trace, parent=exp, kind=SpanKind.CLIENT)]
    if worker is not None:
        out.append(span("render_pdf", base + 5, base + 5 + work_ms, trace=trace, parent=exp, unit=worker))
    elif io_child:
        out.append(span("GET cache", base + 5, base + 6, trace=trace, parent=exp, kind=SpanKind.CLIENT))
    out.append(span("PUT s3", base + work_ms + 6, base + work_ms + 10, trace=trace, parent=exp, kind=SpanKind.CLIENT))
    return out


def test_a_child_in_another_resource_or_a_known_other_thread_is_foreign() -> None:
    assert foreign(WORKER, MAIN)
    assert not foreign(MAIN, MAIN)
    t1 = Unit(service="s", resource=0, thread_id=1)
    t2 = Unit(service="s", resource=0, thread_id=2)
    assert foreign(t2, t1)
    assert not foreign(Unit(service="s", resource=0), t1)  # unknown thread: not evidence


def test_the_largest_hole_and_the_children_around_it() -> None:
    parent = span("p", 0, 100, trace=1)
    kids = [span("a", 0, 10, trace=1, parent=parent), span("b", 70, 80, trace=1, parent=parent)]
    assert largest_hole(parent, kids) == (T0 + 10 * MS, T0 + 70 * MS, "a", "b")
    assert largest_hole(parent, []) == (T0, T0 + 100 * MS, START, END)


def test_a_workers_span_sits_between_the_dispatchers_own_children() -> None:
    parent = span("p", 0, 100, trace=1)
    own = [span("a", 0, 10, trace=1, parent=parent), span("b", 70, 80, trace=1, parent=parent)]
    worker = span("w", 12, 60, trace=1, parent=parent, unit=WORKER)
    assert slot_of(worker, own) == ("a", "b")
    assert slot_of(worker, []) == (START, END)


def test_holes_where_the_same_place_is_filled_by_a_worker_elsewhere_are_silent_dispatches() -> None:
    spans = [s for t in range(1, 9) for s in dispatch(t)]
    silent_traces = (20, 21)
    for t in silent_traces:
        spans += dispatch(t, worker=None)
    found = find_silent_dispatches(spans)
    assert sorted(d.span.trace_id for d in found) == list(silent_traces)
    d = found[0]
    assert d.span.name == "export_report"
    assert d.boundary is Boundary.PROCESS
    assert "between 'SELECT rows' and 'PUT s3'" in d.evidence[0]
    assert any("in 8 other 'export_report' spans" in w for w in d.evidence)
    assert any("the hole lasts" in w for w in d.evidence)
    assert "post_fork(server, worker)" in d.fix.apis


def test_a_hole_never_filled_by_another_unit_is_a_slow_call_and_stays_silent() -> None:
    spans = [s for t in range(1, 12) for s in dispatch(t, worker=None)]
    assert find_silent_dispatches(spans) == []


def test_a_place_filled_only_by_the_dispatchers_own_unit_is_no_worker_evidence() -> None:
    spans = [s for t in range(1, 9) for s in dispatch(t, worker=MAIN)]
    spans += [s for t in (20, 21) for s in dispatch(t, worker=None)]
    assert find_silent_dispatches(spans) == []


def test_too_few_filled_peers_are_no_evidence() -> None:
    spans = [s for t in range(1, DEFAULT.min_filled) for s in dispatch(t)]
    spans += [s for t in (20, 21) for s in dispatch(t, worker=None)]
    assert find_silent_dispatches(spans) == []


def test_a_hole_of_a_very_different_length_than_the_work_weighs_against() -> None:
    spans = [s for t in range(1, 9) for s in dispatch(t, work_ms=20)]
    matching = find_silent_dispatches([*spans, *dispatch(20, worker=None, work_ms=20)])
    longer = find_silent_dispatches([*spans, *dispatch(20, worker=None, work_ms=400)], SilentParams(threshold=0.0))
    assert matching and longer
    assert longer[0].confidence < matching[0].confidence
    assert not any("the hole lasts" in w for w in longer[0].evidence)


def test_a_hole_during_which_the_worker_exported_other_spans_of_the_trace_is_a_lost_parent() -> None:
    spans = [s for t in range(1, 9) for s in dispatch(t)]
    lost = dispatch(20, worker=None)
    exp = lost[1]
    # The worker's child arrived but its own parent (render_pdf) did not: a lost parent, not silence.
    orphan_child = Span(
        trace_id=20,
        span_id=next(_ids),
        parent_span_id=999_999,
        name="layout pages",
        kind=SpanKind.INTERNAL,
        start=exp.start + 6 * MS,
        end=exp.start + 9 * MS,
        flags=0,
        unit=WORKER,
    )
    assert find_silent_dispatches([*spans, *lost, orphan_child]) == []


def test_a_hole_that_covers_little_of_its_span_is_not_one() -> None:
    params = SilentParams(hole_share=0.95)
    spans = [s for t in range(1, 9) for s in dispatch(t)] + dispatch(20, worker=None)
    assert find_silent_dispatches(spans, params) == []
