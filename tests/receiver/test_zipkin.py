"""Receiving Zipkin v2 JSON: ``POST /api/v2/spans`` on its own port, journaled like OTLP.

The answers are checked over real sockets; the recordings come from the fixture apps exporting
through the real Zipkin exporters (``opentelemetry-exporter-zipkin-json``,
``@opentelemetry/exporter-zipkin``). One run exports every span both ways at once
(``OTEL_TRACES_EXPORTER=otlp,zipkin``) to two receivers, so the Zipkin recording can be held
against the OTLP recording of the very same spans.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ctxdoctor.diagnose import diagnose
from ctxdoctor.findings import Report, Settings
from ctxdoctor.model import Span
from ctxdoctor.readers import read_paths
from ctxdoctor.receiver import Receiver
from ctxdoctor.receiver.sink import read_receipts
from tests.helpers import Listen

ROOT = Path(__file__).resolve().parents[2]
NODE_APPS = ROOT / "fixtures" / "apps" / "node"
PY_APPS = ROOT / "fixtures" / "apps" / "python"
HAS_NODE = (
    shutil.which("node") is not None and (NODE_APPS / "node_modules" / "@opentelemetry" / "exporter-zipkin").is_dir()
)
needs_node = pytest.mark.skipif(not HAS_NODE, reason="needs Node.js and fixtures/apps/node/node_modules (make node)")
TIMEOUT = 90

_SPAN = {
    "traceId": "5b8efff798038103d269b633813fc60c",
    "id": "eee19b7ec3c1b174",
    "name": "render_chart",
    "timestamp": 1700000000123456,
    "duration": 2500,
    "localEndpoint": {"serviceName": "report-service"},
    "tags": {"process.pid": "41", "thread.id": "7", "document.id": "d1"},
}


# -- the protocol, over real sockets -------------------------------------------------------------
def _post(port: int, body: bytes, path: str = "/api/v2/spans", **headers: str) -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), dict(resp.getheaders())
    finally:
        conn.close()


def test_answers_and_journal(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    receiver = Receiver(dump, grpc_port=None, http_port=None, zipkin_port=0)
    assert receiver.host == "127.0.0.1"
    with receiver:
        port = receiver.zipkin_port
        assert port
        status, text, _ = _post(port, json.dumps([_SPAN]).encode())
        assert (status, text) == (202, "")
        second = dict(_SPAN, id="00000000000000a2", parentId=_SPAN["id"], kind="CLIENT")
        status, _, _ = _post(port, gzip.compress(json.dumps([second]).encode()), **{"Content-Encoding": "gzip"})
        assert status == 202
        # Bad bodies are refused with what was wrong, and what was accepted before is kept.
        status, text, headers = _post(port, b'[{"traceId": ')
        assert status == 400 and "not valid JSON" in text and headers["Content-Type"].startswith("text/plain")
        status, text, _ = _post(port, json.dumps({"resourceSpans": []}).encode())
        assert status == 400 and "not Zipkin v2 JSON" in text and "array" in text
        status, text, _ = _post(port, json.dumps([dict(_SPAN, id="xyz")]).encode())
        assert status == 400 and "[0].id" in text and "hex" in text
        status, text, _ = _post(port, b"\x0a\x00", **{"Content-Type": "application/x-protobuf"})
        assert status == 415 and "application/json" in text
        status, text, _ = _post(port, b"[]", path="/v1/traces")
        assert status == 404 and "/api/v2/spans" in text
        # Header values are never repeated back: they could hold a secret.
        status, text, _ = _post(port, b"[]", **{"Content-Encoding": "token-s3cr3t"})
        assert status == 415 and "gzip" in text and "s3cr3t" not in text
        status, text, _ = _post(port, b"[]", **{"Content-Type": "Bearer s3cr3t"})
        assert status == 415 and "application/json" in text and "s3cr3t" not in text
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/v2/spans")
        resp = conn.getresponse()
        assert resp.status == 405 and resp.getheader("Allow") == "POST"
        conn.close()
        assert _post(port, b"[]")[0] == 202  # an empty batch is fine, and writes nothing
    spans = read_paths([dump]).spans
    assert len(spans) == 2
    by_id = {s.span_id: s for s in spans}
    root, child = by_id[0xEEE19B7EC3C1B174], by_id[0xA2]
    assert (root.parent_span_id, child.parent_span_id, child.kind) == (0, root.span_id, 3)
    assert (root.start, root.end) == (1700000000123456000, 1700000000125956000)
    assert (root.unit.service, root.unit.pid, root.unit.thread_id) == ("report-service", 41, 7)
    receipts = read_receipts(receiver.receipts_path)  # type: ignore[arg-type]
    assert [r.protocol for r in receipts if r.spans] == ["zipkin/json", "zipkin/json"]
    assert sum(1 for r in receipts if r.status.startswith("invalid")) == 3


def test_busy_zipkin_port_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        listen = Listen(
            tmp_path / "dump.json", ports=("--port", "0", "--http-port", "0", "--zipkin-port", str(busy)), wait=False
        )
        rc, _, err = listen.wait(30)
    assert rc == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert f"Zipkin on 127.0.0.1:{busy}" in lines[0] and "--zipkin-port" in lines[0]


# -- the same run, recorded over OTLP and over Zipkin --------------------------------------------
def _span_key(s: Span) -> tuple[Any, ...]:
    u = s.unit
    unit = (u.service, u.host, u.pid, u.instance_id, u.thread_id, u.thread_name, u.thread_type, u.language)
    return (s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.status, unit)


def _verdict(report: Report) -> tuple[Any, ...]:
    gaps = tuple((g.service, g.parent_name, g.orphan_name, g.boundary, g.occurrences, g.fix.title) for g in report.gaps)
    sm = report.summary
    return gaps, (sm.spans, sm.traces, sm.roots, sm.suspected_orphans, sm.lost_parents)


def _diagnosed(dump: Path) -> tuple[list[Span], Report]:
    loaded = read_paths([dump])
    return loaded.spans, diagnose(loaded.spans, Settings())


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CTX_", "CTXDOCTOR_"))}
    env.update(OTEL_BSP_SCHEDULE_DELAY="100", **extra)
    return env


def _record_both_ways(tmp_path: Path, cmd: list[str], protocol: str, **knobs: str) -> tuple[Path, Path]:
    otlp, zipkin = Listen(tmp_path / "otlp.json"), Listen(tmp_path / "zipkin.json")
    try:
        endpoint = otlp.grpc_endpoint if protocol == "grpc" else otlp.http_endpoint
        env = _clean_env(
            OTEL_TRACES_EXPORTER="otlp,zipkin",
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_EXPORTER_ZIPKIN_ENDPOINT=zipkin.zipkin_endpoint,
            **knobs,
        )
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, proc.stderr
    finally:
        for lp in (otlp, zipkin):
            rc, _, err = lp.stop()
            assert rc == 0, err
    return otlp.dump, zipkin.dump


def _same_diagnosis(otlp: Path, zipkin: Path, gap: tuple[str, str]) -> None:
    otlp_spans, otlp_report = _diagnosed(otlp)
    zipkin_spans, zipkin_report = _diagnosed(zipkin)
    assert len(otlp_spans) > 10
    # Every span, with its ids, parent, kind, process and thread; times to the microsecond Zipkin
    # keeps (the exporters round to it rather than cut).
    assert sorted(map(_span_key, zipkin_spans)) == sorted(map(_span_key, otlp_spans))
    times = {s.span_id: (s.start, s.end) for s in otlp_spans}
    for s in zipkin_spans:
        start, end = times[s.span_id]
        assert s.start % 1000 == 0 and abs(s.start - start) < 1000 and abs(s.end - end) <= 1000
    assert _verdict(zipkin_report) == _verdict(otlp_report)
    assert [(g.parent_name, g.orphan_name) for g in zipkin_report.gaps] == [gap]


def test_python_threadpool_zipkin_recording_matches_otlp(tmp_path: Path) -> None:
    otlp, zipkin = _record_both_ways(
        tmp_path,
        [sys.executable, str(PY_APPS / "threadpool.py")],
        "grpc",
        CTX_MODE="naive",
        CTX_CALLERS="2",
        CTX_REQUESTS="5",
    )
    _same_diagnosis(otlp, zipkin, ("build_report", "render_chart"))


@needs_node
def test_node_worker_threads_zipkin_recording_matches_otlp(tmp_path: Path) -> None:
    otlp, zipkin = _record_both_ways(
        tmp_path,
        ["node", str(NODE_APPS / "worker_threads.js")],
        "http/protobuf",
        CTX_MODE="naive",
        # Eight tasks: four roots that beat their copies are at the edge of what timing alone can
        # make confident (docs/diagnosis.md section 5), and a loaded machine tips them under it;
        # this test is about the two recordings agreeing.
        CTX_TASKS="8",
        CTX_CONCURRENCY="2",
    )
    _same_diagnosis(otlp, zipkin, ("process_data", "worker_process"))


# -- ctxdoctor run around apps on Zipkin exporters -----------------------------------------------
def _run(tmp_path: Path, cmd: list[str], **knobs: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "ctxdoctor", "run", "--max-orphan-ratio", "0.1", "--report-json", "r.json", "--", *cmd],
        cwd=tmp_path,
        env=_clean_env(OTEL_TRACES_EXPORTER="zipkin", **knobs),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return proc.returncode, json.loads((tmp_path / "r.json").read_text()), proc.stderr


@pytest.mark.parametrize(("mode", "gaps"), [("naive", [("build_report", "render_chart")]), ("copied", [])])
def test_run_python_app_on_zipkin(tmp_path: Path, mode: str, gaps: list[tuple[str, str]]) -> None:
    rc, report, err = _run(
        tmp_path, [sys.executable, str(PY_APPS / "threadpool.py")], CTX_MODE=mode, CTX_CALLERS="2", CTX_REQUESTS="4"
    )
    assert rc == (1 if gaps else 0), err
    assert report["run"]["connections"] == {"zipkin/json": 1}
    assert [(g["parent_name"], g["orphan_name"]) for g in report["gaps"]] == gaps
    assert report["summary"]["spans"] > 10


@needs_node
@pytest.mark.parametrize(("mode", "gaps"), [("naive", [("process_data", "worker_process")]), ("propagated", [])])
def test_run_node_app_on_zipkin(tmp_path: Path, mode: str, gaps: list[tuple[str, str]]) -> None:
    rc, report, err = _run(
        tmp_path, ["node", str(NODE_APPS / "worker_threads.js")], CTX_MODE=mode, CTX_TASKS="4", CTX_CONCURRENCY="2"
    )
    assert rc == (1 if gaps else 0), err
    assert set(report["run"]["connections"]) == {"zipkin/json"}
    assert [(g["parent_name"], g["orphan_name"]) for g in report["gaps"]] == gaps
    assert report["summary"]["spans"] >= 16


def test_a_refused_body_never_echoes_tag_values(tmp_path: Path) -> None:
    secret = "sk-live-0123456789"
    with Receiver(tmp_path / "dump.json", grpc_port=None, http_port=None, zipkin_port=0) as receiver:
        assert receiver.zipkin_port
        status, text, _ = _post(receiver.zipkin_port, json.dumps([dict(_SPAN, tags={"token": [secret]})]).encode())
    assert status == 400 and "tags.token" in text and secret not in text
    assert receiver.receipts_path is not None
    assert secret not in receiver.receipts_path.read_text()


# -- listen's default Zipkin port ------------------------------------------------------------------
def _listen_briefly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_port: int) -> tuple[int, str, str]:
    import io

    from rich.console import Console

    from ctxdoctor.receiver import command

    monkeypatch.setattr(command, "ZIPKIN_PORT", default_port)
    out, err = io.StringIO(), io.StringIO()
    rc = command.listen(
        port=0,
        http_port=0,
        output=tmp_path / "dump.json",
        duration=0.2,
        console=Console(file=out, width=300),
        err=Console(file=err, width=300),
    )
    return int(rc), out.getvalue(), err.getvalue()


def test_listen_takes_zipkins_port_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port that is free now stands for 9411
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    rc, out, _ = _listen_briefly(tmp_path, monkeypatch, free)
    assert rc == 0
    assert f"Zipkin on 127.0.0.1:{free} (POST /api/v2/spans)" in out
    assert f"OTEL_EXPORTER_ZIPKIN_ENDPOINT=http://127.0.0.1:{free}/api/v2/spans" in out


def test_listen_goes_on_without_zipkin_when_its_port_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a Zipkin (or a Collector) already on the port
        s.bind(("127.0.0.1", 0))
        s.listen()
        rc, out, err = _listen_briefly(tmp_path, monkeypatch, s.getsockname()[1])
    assert rc == 0
    assert "Zipkin on" not in out
    assert "is taken, so Zipkin is not received; name a free one with --zipkin-port" in err
