"""End-to-end: real OpenTelemetry exporters (Python and Node.js SDKs, in their own processes)
send to the in-process ``Receiver``; the dump must hold every span each app created, once."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctxdoctor.readers import read_paths
from ctxdoctor.receiver import Receiver, read_receipts

APPS = Path(__file__).parent / "apps"
NODE_MODULES = Path(__file__).parents[1] / "fixtures" / "apps" / "node" / "node_modules"
needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_MODULES / "@opentelemetry").is_dir(),
    reason="Node.js or fixtures/apps/node/node_modules is missing (run `make node`)",
)


def _env(tmp_path: Path, endpoint: str, protocol: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        CTXDOCTOR_IDS=str(tmp_path / "ids.txt"),
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    env.update(extra)
    return env


def _created(tmp_path: Path) -> list[tuple[int, int]]:
    out = []
    for line in (tmp_path / "ids.txt").read_text().splitlines():
        t, s = line.split()
        out.append((int(t, 16), int(s, 16)))
    return out


def _check_dump(dump: Path, created: list[tuple[int, int]]) -> list:  # type: ignore[type-arg]
    spans = read_paths([dump]).spans
    got = collections.Counter((s.trace_id, s.span_id) for s in spans)
    assert len(created) == len(set(created)), "the app recorded a span twice"
    dupes = [k for k, n in got.items() if n > 1]
    assert not dupes, f"{len(dupes)} spans written twice"
    assert set(got) == set(created), (
        f"missing {len(set(created) - set(got))}, unexpected {len(set(got) - set(created))}"
    )
    return spans


def _run(cmd: list[str], env: dict[str, str], timeout: float = 90) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"app failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize(
    ("protocol", "compression"),
    [("grpc", "gzip"), ("grpc", "none"), ("http/protobuf", "gzip"), ("http/protobuf", "none")],
)
def test_python_exporters(tmp_path: Path, protocol: str, compression: str) -> None:
    dump = tmp_path / "dump.json"
    with Receiver(output=dump, host="127.0.0.1", grpc_port=0, http_port=0) as rcv:
        port = rcv.grpc_port if protocol == "grpc" else rcv.http_port
        env = _env(
            tmp_path,
            f"http://127.0.0.1:{port}",
            protocol,
            CTXDOCTOR_TASKS="6",
            CTXDOCTOR_SPANS_PER_TASK="50",
        )
        if compression != "none":
            env["OTEL_EXPORTER_OTLP_COMPRESSION"] = compression
        _run([sys.executable, str(APPS / "python_exporter.py")], env)
    created = _created(tmp_path)
    assert len(created) == 1 + 6 * 50
    spans = _check_dump(dump, created)
    assert rcv.stats.spans == len(created)
    # Six pool tasks lost the dispatcher's context: six "task" roots besides "dispatch".
    roots = sorted(s.name for s in spans if s.is_root)
    assert roots == ["dispatch"] + ["task"] * 6
    receipts = read_receipts(dump.with_name("dump.json.receipts.jsonl"))
    assert sum(r.spans for r in receipts) == len(created)
    assert {r.protocol for r in receipts} == {"grpc" if protocol == "grpc" else "http/protobuf"}
    assert {r.compression for r in receipts} == {None if compression == "none" else "gzip"}
    assert {s for r in receipts for s in r.services} == {"receiver-test-python"}


@needs_node
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc", "http/json"])
def test_node_worker_threads_exporters(tmp_path: Path, protocol: str) -> None:
    dump = tmp_path / "dump.json"
    workers = 3
    with Receiver(output=dump, host="127.0.0.1", grpc_port=0, http_port=0) as rcv:
        port = rcv.grpc_port if protocol == "grpc" else rcv.http_port
        env = _env(
            tmp_path,
            f"http://127.0.0.1:{port}",
            protocol,
            CTXDOCTOR_WORKERS=str(workers),
            CTXDOCTOR_SPANS_PER_WORKER="300",
        )
        _run(["node", str(APPS / "node" / "workers.js")], env)
    created = _created(tmp_path)
    assert len(created) == 1 + workers * 300
    spans = _check_dump(dump, created)
    roots = sorted(s.name for s in spans if s.is_root)
    assert roots == ["dispatch"] + ["work"] * workers
    # Every worker runs its own SDK: one resource each, and at least one connection each (the
    # HTTP agent may open more than one per SDK; a gRPC channel is one connection).
    assert rcv.stats.resources_per_service() == {"receiver-test-node": workers + 1}
    conns = rcv.stats.connections_per_service()["receiver-test-node"]
    if protocol == "grpc":
        assert conns == workers + 1
    else:
        assert conns >= workers + 1
