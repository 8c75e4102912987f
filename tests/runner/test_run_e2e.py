"""``ctxdoctor run`` end to end: the real CLI as a process, around real apps with real SDKs.

Each test is small (a few tasks, two workers at most): Node.js worker start-up costs about a
second per worker on a busy 2-core CI machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from ctxdoctor.readers import read_paths
from tests.helpers import APPS, NODE_APPS

HAS_NODE = shutil.which("node") is not None and (NODE_APPS / "node_modules" / "@opentelemetry" / "sdk-node").is_dir()
needs_node = pytest.mark.skipif(not HAS_NODE, reason="needs Node.js and fixtures/apps/node/node_modules (make node)")
TIMEOUT = 60


def _env(**extra: str) -> dict[str, str]:
    # The suite's own environment must not leak an exporter set-up or a CI system into the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GITHUB_", "CTX_", "CTXDOCTOR_"))}
    env.update(extra)
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ctxdoctor", "run", *args]


def ctxdoctor_run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cmd("--report-json", "report.json", *args),
        cwd=tmp_path,
        env=_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _report(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "report.json").read_text())


def _ids(path: Path) -> set[tuple[str, str]]:
    return {tuple(line.split()) for line in path.read_text().splitlines() if line.strip()}  # type: ignore[misc]


def _dump_ids(path: Path) -> set[tuple[str, str]]:
    return {(f"{s.trace_id:032x}", f"{s.span_id:016x}") for s in read_paths([path]).spans}


def _oneline(s: str) -> str:
    return " ".join(s.split())


# -- the gate around the real Node.js worker_threads app ------------------------------------------
@needs_node
def test_node_worker_threads_without_propagation_fails_the_gate(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    proc = ctxdoctor_run(
        tmp_path,
        "--max-orphan-ratio",
        "0.05",
        "--report-junit",
        "junit.xml",
        "--",
        "node",
        str(NODE_APPS / "worker_threads.js"),
        CTX_MODE="naive",
        CTX_TASKS="4",
        CTX_CONCURRENCY="2",
        CTXDOCTOR_TRUTH=str(tmp_path / "truth.jsonl"),
        GITHUB_ACTIONS="true",
        GITHUB_STEP_SUMMARY=str(summary),
    )
    assert proc.returncode == 1, proc.stderr
    assert "process_data -> worker_process" in proc.stdout
    assert "gate FAILED" in proc.stdout
    report = _report(tmp_path)
    assert [(g["parent_name"], g["orphan_name"], g["boundary"]) for g in report["gaps"]] == [
        ("process_data", "worker_process", "thread")
    ]
    # Everything the app made arrived, over sdk-node's default protocol (no protocol was set).
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    orphans = {(t["trace_id"], t["span_id"]) for t in truth if t["label"] == "orphan"}
    assert len(orphans) == 4 and orphans <= _dump_ids(tmp_path / "dump.json")
    assert report["run"]["connections"].keys() == {"http/protobuf"}
    assert report["run"]["spans_received"] == len(read_paths([tmp_path / "dump.json"]).spans)
    assert report["run"]["exit_code"] == 0
    # The CI outputs of the same run.
    failures = [c for c in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase") if c.find("failure") is not None]
    assert {c.get("name") for c in failures} == {"orphan ratio", "process_data -> worker_process"}
    assert "::error title=ctxdoctor%3A thumbnailer%3A process_data -> worker_process::" in proc.stdout
    assert "## ctxdoctor run: node: gate **failed**" in summary.read_text(encoding="utf-8")


@needs_node
def test_node_worker_threads_with_propagation_passes(tmp_path: Path) -> None:
    proc = ctxdoctor_run(
        tmp_path,
        "--max-orphan-ratio",
        "0.05",
        "--",
        "node",
        str(NODE_APPS / "worker_threads.js"),
        CTX_MODE="propagated",
        CTX_TASKS="4",
        CTX_CONCURRENCY="2",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = _report(tmp_path)
    assert report["gaps"] == [] and report["gate"]["failed"] is False
    # 4 requests x (SERVER, load_image, process_data, worker_process + its children): all arrived.
    assert report["summary"]["spans"] >= 16 and report["summary"]["roots"] == 4


# -- both transports, whatever the protocol ---------------------------------------------------------
@pytest.mark.parametrize("protocol", [None, "http/protobuf", "grpc"])
def test_python_app_is_captured_over_each_protocol(tmp_path: Path, protocol: str | None) -> None:
    """Unset means gRPC in Python; each span the app made arrives, exactly once."""
    env = {
        "CTXDOCTOR_IDS": str(tmp_path / "ids.txt"),
        "CTXDOCTOR_ROUNDS": "2",
        "CTXDOCTOR_TASKS": "2",
        "CTXDOCTOR_SPANS_PER_TASK": "3",
    }
    if protocol:
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    proc = ctxdoctor_run(tmp_path, "--", sys.executable, str(APPS / "python_exporter.py"), **env)
    assert proc.returncode == 0, proc.stderr
    made = _ids(tmp_path / "ids.txt")
    assert len(made) == 2 * (1 + 2 * 3)
    assert _dump_ids(tmp_path / "dump.json") == made
    run = _report(tmp_path)["run"]
    assert run["spans_received"] == len(made)
    assert run["connections"].keys() == {"grpc" if protocol in (None, "grpc") else "http/protobuf"}


@needs_node
@pytest.mark.parametrize("protocol", ["grpc", "http/json"])
def test_node_app_is_captured_over_grpc_and_json(tmp_path: Path, protocol: str) -> None:
    proc = ctxdoctor_run(
        tmp_path,
        "--",
        "node",
        str(APPS / "node" / "workers.js"),
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        CTXDOCTOR_IDS=str(tmp_path / "ids.txt"),
        CTXDOCTOR_WORKERS="1",
        CTXDOCTOR_ROUNDS="2",
        CTXDOCTOR_SPANS_PER_TASK="3",
    )
    assert proc.returncode == 0, proc.stderr
    made = _ids(tmp_path / "ids.txt")
    assert len(made) == 2 * (1 + 3)
    assert _dump_ids(tmp_path / "dump.json") == made
    assert _report(tmp_path)["run"]["connections"].keys() == {protocol}


def test_user_endpoint_is_overridden_and_other_settings_kept(tmp_path: Path) -> None:
    """A user's traces endpoint and INSECURE=false would send the spans elsewhere or over TLS."""
    script = tmp_path / "show_env.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
            provider.get_tracer("t").start_span("one").end()
            provider.shutdown()
            keys = ("TRACEPARENT", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_BSP_SCHEDULE_DELAY")
            print(json.dumps({k: os.environ.get(k) for k in keys}))
            """
        )
    )
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    proc = ctxdoctor_run(
        tmp_path,
        "--",
        sys.executable,
        str(script),
        TRACEPARENT=traceparent,
        OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer s3cret",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="https://collector.invalid:4317",
        OTEL_EXPORTER_OTLP_INSECURE="false",
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    assert seen["TRACEPARENT"] == traceparent
    assert seen["OTEL_EXPORTER_OTLP_HEADERS"] == "authorization=Bearer s3cret"
    assert seen["OTEL_EXPORTER_OTLP_INSECURE"] == "false"
    assert seen["OTEL_EXPORTER_OTLP_TRACES_INSECURE"] == "true"
    assert seen["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].endswith("/v1/traces")
    assert seen["OTEL_BSP_SCHEDULE_DELAY"] is None
    assert _report(tmp_path)["run"]["spans_received"] == 1
    err = _oneline(proc.stderr)
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:" in err and "(replaces the value you set)" in err
    assert "collector.invalid" not in proc.stderr and "s3cret" not in proc.stderr


# -- exit codes -----------------------------------------------------------------------------------
EXPORT_THEN_EXIT = """
import sys
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
tracer = provider.get_tracer("crash")
with tracer.start_as_current_span("job"):
    with tracer.start_as_current_span("step"):
        pass
provider.shutdown()
sys.exit(7)
"""


def test_a_failing_command_passes_its_exit_code_on_and_is_still_analysed(tmp_path: Path) -> None:
    proc = ctxdoctor_run(tmp_path, "--max-orphan-ratio", "0", "--", sys.executable, "-c", EXPORT_THEN_EXIT)
    assert proc.returncode == 7, proc.stderr
    assert "exited with code 7" in _oneline(proc.stderr)
    report = _report(tmp_path)
    assert report["run"]["exit_code"] == 7 and report["summary"]["spans"] == 2
    assert "2 spans in 1 traces" in proc.stdout


def test_a_command_killed_by_a_signal_gives_128_plus_n(tmp_path: Path) -> None:
    suicide = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    proc = ctxdoctor_run(tmp_path, "--", sys.executable, "-c", suicide)
    assert proc.returncode == 128 + signal.SIGKILL
    assert "killed by SIGKILL" in _oneline(proc.stderr)


def test_a_missing_command_is_127(tmp_path: Path) -> None:
    proc = ctxdoctor_run(tmp_path, "--", str(tmp_path / "no-such-program"))
    assert proc.returncode == 127
    assert "command not found" in proc.stderr


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    proc = ctxdoctor_run(tmp_path)
    assert proc.returncode == 2


# -- the end of the run -----------------------------------------------------------------------------
def test_exports_from_processes_the_command_left_behind_are_waited_for(tmp_path: Path) -> None:
    """``sh -c 'app & exit 0'``: the shell exits at once; its background child exports a second later."""
    app = tmp_path / "late.py"
    app.write_text("import time\ntime.sleep(1)\n" + EXPORT_THEN_EXIT)
    proc = ctxdoctor_run(tmp_path, "--", "sh", "-c", f"'{sys.executable}' '{app}' & exit 0")
    assert proc.returncode == 0, proc.stderr
    assert _report(tmp_path)["run"]["spans_received"] == 2


def test_the_wait_for_leftover_processes_is_bounded(tmp_path: Path) -> None:
    # A daemon the command leaves running (its output detached) must not hold the run for its lifetime.
    started = time.monotonic()
    proc = ctxdoctor_run(tmp_path, "--drain", "0.5", "--", "sh", "-c", "sleep 8 >/dev/null 2>&1 & exit 0")
    assert proc.returncode == 0, proc.stderr
    assert "still running after 0.5s" in _oneline(proc.stderr)
    assert time.monotonic() - started < 6


# -- signals ----------------------------------------------------------------------------------------
TICKER = """
import os, threading, time
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

class Count(SpanProcessor):
    ended = 0
    lock = threading.Lock()
    def on_end(self, span):
        with self.lock:
            Count.ended += 1

provider = TracerProvider()
provider.add_span_processor(Count())
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
tracer = provider.get_tracer("ticker")
try:
    while True:
        with tracer.start_as_current_span("tick"):
            with tracer.start_as_current_span("work"):
                time.sleep(0.01)
        if Count.ended == 20:
            provider.force_flush()  # these 20 are in the receiver before the interrupt
        if Count.ended == 40:
            print("READY", flush=True)  # these 20 more wait in the batch queue (5 s delay)
finally:
    provider.shutdown()  # a Ctrl-C still flushes what was made, as a well-behaved app does
    with open(os.environ["COUNT_FILE"], "w") as fh:
        fh.write(str(Count.ended))
"""


def _start(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _cmd("--report-json", "report.json", *args),
        cwd=tmp_path,
        env=_env(**env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_line(proc: subprocess.Popen[str], marker: str, timeout: float = 30.0) -> list[str]:
    """Read stdout until ``marker``; fail (and kill) if it does not come."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        proc.kill()
        pytest.fail(f"{marker!r} never printed; stderr: {proc.communicate()[1]}")
    return lines


def test_ctrl_c_mid_run_keeps_and_analyses_the_spans(tmp_path: Path) -> None:
    count = tmp_path / "count.txt"
    proc = _start(tmp_path, "--", sys.executable, "-c", TICKER, COUNT_FILE=str(count))
    before = _wait_for_line(proc, "READY")
    proc.send_signal(signal.SIGINT)  # to ctxdoctor only, as a CI runner or `kill -INT` would
    out, err = proc.communicate(timeout=TIMEOUT)
    out = "".join(before) + out
    assert proc.returncode == 128 + signal.SIGINT, err
    report = _report(tmp_path)
    made = int(count.read_text())
    assert made >= 40  # including the queued ones the app flushed while exiting on SIGINT
    assert report["run"]["signals_passed_on"] == ["SIGINT"]
    assert report["run"]["spans_received"] == made == report["summary"]["spans"]
    assert len(read_paths([tmp_path / "dump.json"]).spans) == made  # the dump is kept
    assert f"{made} spans in" in out  # and analysed


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # Default SIGTERM action: killed by it.
        ("import time; print('READY', flush=True); time.sleep(60)", 128 + signal.SIGTERM),
        # Handles SIGTERM and exits 0: the run was still cut short, so it must not pass.
        (
            "import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
            "print('READY', flush=True)\n"
            "time.sleep(60)",
            128 + signal.SIGTERM,
        ),
    ],
)
def test_sigterm_is_passed_on(tmp_path: Path, code: str, expected: int) -> None:
    proc = _start(tmp_path, "--max-orphan-ratio", "1", "--", sys.executable, "-c", code)
    _wait_for_line(proc, "READY")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == expected, err
    assert _report(tmp_path)["run"]["signals_passed_on"] == ["SIGTERM"]
    assert (tmp_path / "dump.json").exists()
