"""End-to-end: ``ctxdoctor listen`` as a process, real OpenTelemetry exporters (Python and
Node.js SDKs, each app in its own process) pointed at it through the standard environment
variables. The dump must hold every span each app created, exactly once, and its analysis must
show the context the apps lost."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxdoctor.diagnose import diagnose
from ctxdoctor.model import Span
from ctxdoctor.readers import read_paths
from ctxdoctor.receiver import read_receipts
from tests.apps.listen import Listen

APPS = Path(__file__).parent / "apps"
NODE_MODULES = Path(__file__).parents[1] / "fixtures" / "apps" / "node" / "node_modules"
needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_MODULES / "@opentelemetry").is_dir(),
    reason="Node.js or fixtures/apps/node/node_modules is missing (run `make node`)",
)


def app_env(ids: Path, endpoint: str, protocol: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        CTXDOCTOR_IDS=str(ids),
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    env.update(extra)
    return env


def created_ids(ids: Path) -> list[tuple[int, int]]:
    out = []
    for line in ids.read_text().splitlines():
        t, s = line.split()
        out.append((int(t, 16), int(s, 16)))
    return out


def check_dump(dump: Path, created: list[tuple[int, int]]) -> list[Span]:
    """Every created span is in the dump, none twice, nothing else."""
    spans = read_paths([dump]).spans
    got = collections.Counter((s.trace_id, s.span_id) for s in spans)
    assert len(created) == len(set(created)), "the app recorded a span twice"
    dupes = [k for k, n in got.items() if n > 1]
    assert not dupes, f"{len(dupes)} spans written twice"
    assert set(got) == set(created), (
        f"missing {len(set(created) - set(got))}, unexpected {len(set(got) - set(created))}"
    )
    return spans


def run_app(cmd: list[str], env: dict[str, str], timeout: float = 120) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"app failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture
def listen(tmp_path: Path) -> Iterator[Listen]:
    lp = Listen(tmp_path / "dump.json")
    yield lp
    lp.kill()


def _gap_counts(spans: list[Span]) -> dict[tuple[str, str], int]:
    report = diagnose(spans)
    return {(g.parent_name, g.orphan_name): g.occurrences for g in report.gaps}


def run_python_app(
    tmp_path: Path, listen: Listen, protocol: str, rounds: int, tasks: int, per_task: int, **extra: str
) -> None:
    """The Python SDK app (a dispatcher handing tasks to a pool) exporting to ``listen``."""
    endpoint = listen.grpc_endpoint if protocol == "grpc" else listen.http_endpoint
    env = app_env(
        tmp_path / "ids.txt",
        endpoint,
        protocol,
        CTXDOCTOR_ROUNDS=str(rounds),
        CTXDOCTOR_TASKS=str(tasks),
        CTXDOCTOR_SPANS_PER_TASK=str(per_task),
        **extra,
    )
    run_app([sys.executable, str(APPS / "python_exporter.py")], env)


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
    workers, rounds, per_task = 3, 6, 40
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
