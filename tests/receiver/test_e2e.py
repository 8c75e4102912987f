"""End-to-end: ``ctxdoctor listen`` as a process, real OpenTelemetry exporters (Python and
Node.js SDKs, each app in its own process) pointed at it through the standard environment
variables. The dump must hold every span each app created, exactly once, and its analysis must
show the context the apps lost."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from ctxdoctor.diagnose import diagnose
from ctxdoctor.model import Span
from ctxdoctor.receiver import read_receipts
from tests.helpers import APPS, Listen, app_env, check_dump, created_ids, needs_node, run_app, run_python_app


def _gap_counts(spans: list[Span]) -> dict[tuple[str, str], int]:
    report = diagnose(spans)
    return {(g.parent_name, g.orphan_name): g.occurrences for g in report.gaps}


@pytest.mark.parametrize(
    ("protocol", "compression"),
    [("grpc", "gzip"), ("grpc", None), ("http/protobuf", "gzip"), ("http/protobuf", None)],
)
def test_python_exporters(tmp_path: Path, listen: Listen, protocol: str, compression: str | None) -> None:
    rounds, tasks, per_task = 8, 4, 10
    extra = {"OTEL_EXPORTER_OTLP_COMPRESSION": compression} if compression else {}
    run_python_app(tmp_path, listen, protocol, rounds, tasks, per_task, **extra)
    rc, out, err = listen.stop()
    assert rc == 0, err
    created = created_ids(tmp_path / "ids.txt")
    assert len(created) == rounds * (1 + tasks * per_task)
    spans = check_dump(listen.dump, created)
    assert f"Received {len(created)} spans" in out
    assert "receiver-test-python: 1 connection, 1 SDK instance" in out
    # Every pool task lost the dispatcher's context: a "task" root per task besides "dispatch".
    roots = collections.Counter(s.name for s in spans if s.is_root)
    assert roots == {"dispatch": rounds, "task": rounds * tasks}
    assert _gap_counts(spans).get(("dispatch", "task"), 0) >= rounds * tasks // 2
    assert "dispatch" in out and "task" in out  # the report names the gap
    receipts = read_receipts(tmp_path / "dump.json.receipts.jsonl")
    assert sum(r.spans for r in receipts) == len(created)
    assert {r.protocol for r in receipts} == {protocol}
    assert {r.compression for r in receipts} == {compression}
    assert {s for r in receipts for s in r.services} == {"receiver-test-python"}


@needs_node
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc", "http/json"])
def test_node_worker_threads_exporters(tmp_path: Path, listen: Listen, protocol: str) -> None:
    # Enough rounds for the diagnosis to tell the gap from chance (it calibrates against the
    # roots' own jittered copies: six rounds are too few to be sure every time).
    workers, rounds, per_task = 3, 12, 40
    endpoint = listen.grpc_endpoint if protocol == "grpc" else listen.http_endpoint
    env = app_env(
        tmp_path / "ids.txt",
        endpoint,
        protocol,
        CTXDOCTOR_WORKERS=str(workers),
        CTXDOCTOR_ROUNDS=str(rounds),
        CTXDOCTOR_SPANS_PER_TASK=str(per_task),
    )
    run_app(["node", str(APPS / "node" / "workers.js")], env)
    rc, out, err = listen.stop()
    assert rc == 0, err
    created = created_ids(tmp_path / "ids.txt")
    assert len(created) == rounds * (1 + workers * per_task)
    spans = check_dump(listen.dump, created)
    roots = collections.Counter(s.name for s in spans if s.is_root)
    assert roots == {"dispatch": rounds, "work": rounds * workers}
    assert _gap_counts(spans).get(("dispatch", "work"), 0) >= 1
    # Every worker runs its own SDK: one resource each, and at least one connection each (the
    # HTTP agent may open more than one per SDK; a gRPC channel is one connection).
    line = next(x for x in out.splitlines() if x.strip().startswith("receiver-test-node:"))
    conns = int(line.split(":")[1].split()[0])
    assert f"{workers + 1} SDK instances" in line
    if protocol == "grpc":
        assert conns == workers + 1
    else:
        assert conns >= workers + 1
    receipts = read_receipts(tmp_path / "dump.json.receipts.jsonl")
    assert {r.protocol for r in receipts} == {protocol}
