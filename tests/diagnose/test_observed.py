"""The probe's facts applied to the statistical findings (diagnose/observed.py).

Hand-made edge cases: spans and probe lines are written out here so each rule is pinned by a
case that would fail without it. The real apps under ``ctxdoctor run`` are in tests/runner/.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from ctxdoctor.diagnose import diagnose
from ctxdoctor.diagnose.observed import SEEN, SILENT_AFTER_S, apply_observations
from ctxdoctor.findings import Allow, Orphan, Report, Settings
from ctxdoctor.model import Span, SpanKind, Unit
from ctxdoctor.probe.facts import SeenProcess, decode
from ctxdoctor.units import Boundary

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
MAIN = Unit("svc", 0, pid=10, thread_id=0, language="nodejs")
WORKER = Unit("svc", 1, pid=10, thread_id=1, language="nodejs")


def span(trace: int, sid: int, name: str, start_ms: float, end_ms: float, unit: Unit, parent: int = 0) -> Span:
    kind = SpanKind.SERVER if name.startswith("GET") else SpanKind.INTERNAL
    return Span(trace, sid, parent, name, kind, T0 + int(start_ms * MS), T0 + int(end_ms * MS), 0, unit)


def lines(*records: dict[str, Any]) -> list[bytes]:
    return [json.dumps(r).encode() + b"\n" for r in records]


def at(ms: float) -> str:
    return str(T0 + int(ms * MS))


def ref(trace: int, sid: int) -> dict[str, str]:
    return {"trace": f"{trace:032x}", "span": f"{sid:016x}"}


SITE = {"file": "/app/server.js", "line": 33, "column": 22, "function": "handle"}


def two_requests() -> list[Span]:
    """Two requests; each hands work to the same worker thread, which starts a new trace."""
    return [
        span(1, 1, "GET /a", 0, 50, MAIN),
        span(1, 11, "process_data", 1, 49, MAIN, parent=1),
        span(2, 2, "GET /b", 2, 52, MAIN),
        span(2, 12, "process_data", 3, 51, MAIN, parent=2),
        span(101, 101, "worker_process", 10, 40, WORKER),
        span(102, 102, "worker_process", 12, 45, WORKER),
    ]


def worker_facts(
    first_parent: tuple[int, int] | None = (1, 11), first_site: dict[str, Any] = SITE
) -> list[bytes]:
    node = {"rt": "node", "pid": 10}
    return lines(
        {**node, "ev": "unit", "tid": 0, "t": at(-100), "main": True, "argv": ["node", "server.js"]},
        {**node, "ev": "sdk", "tid": 0, "t": at(-90)},
        # The pool starts its thread (set-up: superseded by the messages below).
        {
            **node,
            "ev": "dispatch",
            "id": "10.0.1",
            "tid": 0,
            "t": at(-50),
            "api": "worker_threads.Worker",
            "span": None,
            "site": SITE,
            "target_tid": 1,
            "task": True,
        },
        {**node, "ev": "unit", "tid": 1, "t": at(-40), "main": False},
        {**node, "ev": "sdk", "tid": 1, "t": at(-30)},
        {
            **node,
            "ev": "dispatch",
            "id": "10.0.2",
            "tid": 0,
            "t": at(5),
            "api": "MessagePort.postMessage",
            "span": ref(*first_parent) if first_parent else None,
            "site": first_site,
            "target_tid": 1,
            "task": True,
        },
        {
            **node,
            "ev": "dispatch",
            "id": "10.0.3",
            "tid": 0,
            "t": at(6),
            "api": "MessagePort.postMessage",
            "span": ref(2, 12),
            "site": SITE,
            "target_tid": 1,
            "task": True,
        },
        # The worker handles them in order; the second waits for the first.
        {
            **node,
            "ev": "start",
            "tid": 1,
            "t": at(10),
            "trace": f"{101:032x}",
            "span": f"{101:016x}",
            "name": "worker_process",
        },
        {
            **node,
            "ev": "start",
            "tid": 1,
            "t": at(12),
            "trace": f"{102:032x}",
            "span": f"{102:016x}",
            "name": "worker_process",
        },
        {**node, "ev": "exit", "tid": 1, "t": at(60), "sdk": True},
        {**node, "ev": "exit", "tid": 0, "t": at(70), "sdk": True},
    )


def test_an_observed_dispatch_names_the_parent_the_site_and_the_api() -> None:
    spans = two_requests()
    report = apply_observations(diagnose(spans), spans, decode(worker_facts()))
    by_name = {(o.span.span_id, o.parent.span_id if o.parent else None) for o in report.orphans}
    assert by_name == {(101, 11), (102, 12)}
    for o in report.orphans:
        assert o.observed and o.confidence == 1.0 and o.parent_confidence == 1.0
        assert o.evidence[0] == SEEN
        assert o.dispatch_site is not None and (o.dispatch_site.file, o.dispatch_site.line) == ("/app/server.js", 33)
        assert o.dispatch_api == "MessagePort.postMessage"
    assert report.summary.suspected_orphans == 2
    assert report.observation is not None and report.observation.observed_orphans == 2
    assert [(g.parent_name, g.orphan_name, g.occurrences) for g in report.gaps] == [
        ("process_data", "worker_process", 2)
    ]


def _suspected(spans: list[Span]) -> Report:
    """The statistics' view, written out: both worker roots suspected (inferred, confidence 0.8)."""
    base = diagnose(spans)
    by_id = {s.span_id: s for s in spans}
    orphans = tuple(
        Orphan(by_id[root], by_id[parent], Boundary.THREAD, "same process", 0.8, 0.9, 2)
        for root, parent in ((101, 11), (102, 12))
    )
    fragments = base.summary.fragments
    summary = msgspec.structs.replace(base.summary, suspected_orphans=2, broken_fragments=2, orphan_ratio=2 / fragments)
    return msgspec.structs.replace(base, orphans=orphans, summary=summary)


#: A line that only ever sends outside any span.
UNTRACED_SITE = {**SITE, "line": 90, "function": "warm_up"}


def test_a_dispatch_made_outside_any_span_drops_the_statistical_suspect() -> None:
    spans = two_requests()
    statistical = _suspected(spans)
    report = apply_observations(statistical, spans, decode(worker_facts(None, UNTRACED_SITE)))
    assert [o.span.span_id for o in report.orphans] == [102]
    assert report.observation is not None and report.observation.dropped == 1
    assert report.summary.broken_fragments == statistical.summary.broken_fragments - 1
    assert report.summary.orphan_ratio < statistical.summary.orphan_ratio


def test_a_span_less_send_from_a_line_that_also_sends_inside_spans_drops_nothing() -> None:
    """An app's own pool: the line that sends a queued task runs inside the submitting span when a
    worker is free at once, and inside whatever callback freed one otherwise. Its span-less sends
    say nothing about where the task came from: the suspect stays, inferred."""
    spans = two_requests()
    statistical = _suspected(spans)
    report = apply_observations(statistical, spans, decode(worker_facts(first_parent=None)))
    assert [(o.span.span_id, o.observed) for o in report.orphans] == [(102, True), (101, False)]
    assert report.observation is not None and report.observation.dropped == 0


def test_allow_rules_apply_to_observed_orphans_too() -> None:
    spans = two_requests()
    settings = Settings(allow=(Allow(name="worker_process"),))
    report = apply_observations(diagnose(spans, settings), spans, decode(worker_facts()))
    assert report.orphans == ()


def test_a_worker_with_no_sdk_is_silent_only_when_the_dispatcher_traces() -> None:
    node = {"rt": "node", "pid": 10}
    base = [
        {**node, "ev": "unit", "tid": 0, "t": at(0), "main": True},
        {
            **node,
            "ev": "dispatch",
            "id": "10.0.1",
            "tid": 0,
            "t": at(1),
            "api": "worker_threads.Worker",
            "span": ref(1, 11),
            "site": SITE,
            "target_tid": 1,
            "task": True,
        },
        {**node, "ev": "unit", "tid": 1, "t": at(2), "main": False},
        {**node, "ev": "exit", "tid": 1, "t": at(3), "sdk": False},
    ]
    spans = [span(1, 1, "GET /a", 0, 50, MAIN), span(1, 11, "process_data", 1, 49, MAIN, parent=1)]
    traced = apply_observations(
        diagnose(spans), spans, decode(lines({**node, "ev": "sdk", "tid": 0, "t": at(0)}, *base))
    )
    assert len(traced.silent_workers) == 1
    w = traced.silent_workers[0]
    assert (w.api, w.workers, w.dispatches, w.with_span) == ("worker_threads.Worker", 1, 1, 1)
    assert w.site is not None and w.site.line == 33
    assert "SDK" in w.fix.title and any("shutdown" in s for s in w.fix.steps)
    untraced = apply_observations(diagnose(spans), spans, decode(lines(*base)))
    assert untraced.silent_workers == ()
    assert untraced.observation is not None and any("no SDK anywhere" in n for n in untraced.observation.notes)


def test_silent_processes_are_long_lived_leaves_that_started_no_span() -> None:
    spans = [span(1, 1, "GET /a", 0, 50, Unit("svc", 0, pid=10, language="python"))]
    facts = decode(lines({"rt": "python", "pid": 10, "ev": "proc", "t": at(0)}))
    long = SILENT_AFTER_S + 1
    facts = facts.__class__(
        dispatches=facts.dispatches,
        starts=facts.starts,
        units=facts.units,
        processes=(
            SeenProcess(pid=10, parent_pid=1, command="python app.py", started=0, last_seen=long, has_children=True),
            SeenProcess(
                pid=11, parent_pid=10, command="python worker.py", started=0, last_seen=long, has_children=False
            ),
            SeenProcess(pid=12, parent_pid=10, command="sh -c true", started=0, last_seen=0.1, has_children=False),
            SeenProcess(
                pid=13,
                parent_pid=10,
                command="python -c from multiprocessing.resource_tracker import main",
                started=0,
                last_seen=long,
                has_children=False,
            ),
        ),
    )
    report = apply_observations(diagnose(spans), spans, facts)
    assert [(p.pid, p.command, p.parent_pid) for p in report.silent_processes] == [(11, "python worker.py", 10)]
    assert report.silent_processes[0].lifetime_s == long


def test_unreadable_lines_are_skipped_and_counted() -> None:
    good = lines({"rt": "python", "pid": 5, "ev": "proc", "t": 1})
    facts = decode([*good, b'{"rt": "python", "pid": 5, "ev": "dispa', b"not json\n"])
    assert len(facts.units) == 1 and facts.skipped_lines == 2


def test_a_python_target_fact_completes_its_dispatch() -> None:
    facts = decode(
        lines(
            {
                "rt": "python",
                "pid": 5,
                "ev": "dispatch",
                "id": "5-1",
                "t": 1,
                "tid": 1,
                "api": "multiprocessing.Process.start",
            },
            {"rt": "python", "pid": 5, "ev": "target", "id": "5-1", "t": 2, "child_pid": 77},
        )
    )
    assert facts.dispatches[0].child_pid == 77


def _flusher_leak() -> list[Span]:
    """A flusher set up inside the first request: its ticks land under that request's set-up span."""
    spans = []
    for t in range(1, 7):
        spans.append(span(t, t, "GET /orders", t * 40, t * 40 + 8, MAIN))
    spans.append(span(1, 50, "start flusher", 41, 42, MAIN, parent=1))
    spans.append(span(2, 60, "load cache", 81, 82, MAIN, parent=2))
    spans += [span(1, 70 + k, "flush_metrics", 60 + 15 * k, 61 + 15 * k, MAIN, parent=50) for k in range(12)]
    return spans


def _registration(span_ref: dict[str, str], api: str = "setInterval", **extra: Any) -> list[bytes]:
    """Hand-made probe lines: the app's unit with an SDK, and one callback set up inside a span."""
    node = {"rt": "node", "pid": 10, "tid": 0}
    return lines(
        {**node, "ev": "unit", "t": at(-100), "main": True, "argv": ["node", "server.js"]},
        {**node, "ev": "sdk", "t": at(-90)},
        {**node, "ev": "register", "id": "10.0.1", "t": at(41.5), "api": api, "span": span_ref, "site": SITE, **extra},
        {**node, "ev": "exit", "t": at(300), "sdk": True},
    )


def test_a_leak_whose_wrong_parent_set_up_the_callback_is_observed_with_the_registration_site() -> None:
    spans = _flusher_leak()
    statistical = diagnose(spans)
    assert len(statistical.leaks) == 12 and not any(lk.observed for lk in statistical.leaks)
    report = apply_observations(statistical, spans, decode(_registration(ref(1, 50))))
    assert len(report.leaks) == 12
    before = {lk.span.span_id: lk for lk in statistical.leaks}
    for lk in report.leaks:
        assert lk.evidence[1:] == before[lk.span.span_id].evidence  # the statistics' evidence stays, after
        assert lk.confidence == before[lk.span.span_id].confidence
        assert lk.observed and lk.registration_api == "setInterval"
        assert lk.registration_site is not None
        assert (lk.registration_site.file, lk.registration_site.line) == ("/app/server.js", 33)
        assert lk.evidence[0].startswith("seen at registration: setInterval at /app/server.js:33:22 (handle) ran ")
        assert "inside 'start flusher'" in lk.evidence[0]
    assert report.observation is not None and report.observation.observed_leaks == 12


def test_a_bound_listener_names_its_event_and_a_registration_elsewhere_leaves_the_leak_inferred() -> None:
    spans = _flusher_leak()
    statistical = diagnose(spans)
    bound = _registration(ref(1, 50), "EventEmitter.on", event="order", bound=True)
    [first, *_] = apply_observations(statistical, spans, decode(bound)).leaks
    assert first.evidence[0].startswith("seen at registration: EventEmitter.on('order') at /app/server.js:33")
    assert "a listener bound to its context with context.bind" in first.evidence[0]
    # A callback set up in another span says nothing about these leaks.
    report = apply_observations(statistical, spans, decode(_registration(ref(2, 60))))
    assert not any(lk.observed or lk.registration_site for lk in report.leaks)
    assert report.leaks == statistical.leaks
    assert report.observation is not None and report.observation.observed_leaks == 0
