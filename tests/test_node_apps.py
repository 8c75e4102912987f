"""The Node.js fixture apps, re-run small against the real receiver.

The shipped dumps were recorded once; these tests re-record a few scenarios with fewer tasks so a
change to an app, to the pinned SDKs or to the receiver that breaks the ground truth shows up in
CI rather than at the next re-recording. Beyond ``fixtures/record.py``'s own consistency check
they pin down the SDK behaviour the diagnosis leans on: the parent-is-remote flag bits, and which
resource attributes tell a Node.js worker thread or child process apart from the main thread.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ctxdoctor.model import FLAG_IS_REMOTE_KNOWN, FLAG_PARENT_IS_REMOTE, Span
from ctxdoctor.readers import read_paths
from tests.scenarios import load_recorder

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / "fixtures" / "apps" / "node" / "node_modules"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_MODULES / "@opentelemetry" / "sdk-node").is_dir(),
    reason="needs Node.js and fixtures/apps/node/node_modules (run `make node`)",
)


recorder = load_recorder()


def _record_small(name: str, tmp_path: Path, **env: str) -> tuple[dict[str, Any], list[Span], list[dict[str, Any]]]:
    """Record scenario ``name`` with some knobs overridden; record() itself fails on any mismatch."""
    scenario = recorder.load_scenario(ROOT / "fixtures" / "scenarios" / name / "scenario.json")
    scenario = dataclasses.replace(scenario, env={**scenario.env, **env}, timeout_s=60.0)
    meta = recorder.record(scenario, tmp_path)
    out = tmp_path / name
    spans = read_paths([out / "dump.json"]).spans
    truth = recorder.read_truth(out / "truth.jsonl")
    return meta, spans, truth


def _by_name(spans: list[Span], name: str) -> list[Span]:
    found = [s for s in spans if s.name == name]
    assert found, f"no {name!r} spans"
    return found


def test_worker_threads_naive_orphans_each_worker_span(tmp_path: Path) -> None:
    meta, spans, truth = _record_small(
        "node-worker-threads-naive", tmp_path, CTX_TASKS="4", CTX_CONCURRENCY="2", CTX_WORK_MS="5"
    )
    assert meta["counts"]["truth"] == {"orphan": 4, "root": 4, "missing_parent": 0}
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    for rec in (r for r in truth if r["label"] == "orphan"):
        orphan = by_id[(int(rec["trace_id"], 16), int(rec["span_id"], 16))]
        parent = by_id[(int(rec["intended_parent"]["trace_id"], 16), int(rec["intended_parent"]["span_id"], 16))]
        assert orphan.is_root and orphan.name == "worker_process"
        # A fresh root still says "parent is not remote": there is no parent at all.
        assert orphan.flags & (FLAG_IS_REMOTE_KNOWN | FLAG_PARENT_IS_REMOTE) == FLAG_IS_REMOTE_KNOWN
        # The worker ran in the same process but its own thread, and says so in its resource.
        assert orphan.unit.pid == parent.unit.pid
        assert (orphan.unit.thread_type, parent.unit.thread_type) == ("worker", "main")
        assert orphan.unit.thread_id not in (None, parent.unit.thread_id)
        # Start times come from Date.now() (whole milliseconds), so allow 1 ms of slack.
        assert parent.start - 1_000_000 <= orphan.start <= parent.end


def test_worker_threads_propagated_marks_the_parent_remote(tmp_path: Path) -> None:
    meta, spans, _ = _record_small(
        "node-worker-threads-propagated", tmp_path, CTX_TASKS="4", CTX_CONCURRENCY="2", CTX_WORK_MS="5"
    )
    assert meta["counts"]["truth"] == {"orphan": 0, "root": 4, "missing_parent": 0}
    assert {s.name for s in spans if s.is_root} == {"GET /thumbnails/:id"}
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    for span in _by_name(spans, "worker_process"):
        assert span.parent_remote is True
        assert by_id[(span.trace_id, span.parent_span_id)].name == "process_data"
    # Everything else had a parent in its own SDK.
    assert all(s.parent_remote is False for s in spans if s.name != "worker_process" and not s.is_root)


def test_piscina_threads_are_indistinguishable_without_thread_attributes(tmp_path: Path) -> None:
    _, spans, truth = _record_small(
        "node-piscina-naive", tmp_path, CTX_TASKS="12", CTX_CONCURRENCY="4", CTX_THREADS="2", CTX_WORK_MS="5"
    )
    assert Counter(r["label"] for r in truth) == {"orphan": 12, "root": 12}
    pool = {s.unit for s in _by_name(spans, "render_pdf")}
    main = {s.unit for s in _by_name(spans, "render_invoice")}
    # Two pool threads, one resource: nothing but the SDK's own detectors describe them, and those
    # see the same process. Only process.command (piscina's worker script) sets them apart from
    # the main thread, so the units differ by resource but carry no thread identity.
    assert len(pool) == 1 and len(main) == 1 and pool != main
    (worker_unit,) = pool
    (main_unit,) = main
    assert worker_unit.pid == main_unit.pid
    assert worker_unit.thread_id is None and worker_unit.thread_type is None


def test_unflushed_worker_leaves_children_of_a_local_parent(tmp_path: Path) -> None:
    meta, spans, truth = _record_small(
        "node-worker-exit-unflushed", tmp_path, CTX_TASKS="8", CTX_CONCURRENCY="4", CTX_FAIL_EVERY="4", CTX_WORK_MS="5"
    )
    # Batches 3 (process.exit) and 7 (watchdog terminate) die; each leaves parse_rows and validate_rows.
    assert meta["counts"]["truth"] == {"orphan": 0, "root": 8, "missing_parent": 4}
    present = {(s.trace_id, s.span_id) for s in spans}
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    lost_parents = set()
    for rec in (r for r in truth if r["label"] == "missing_parent"):
        span = by_id[(int(rec["trace_id"], 16), int(rec["span_id"], 16))]
        assert span.name in ("parse_rows", "validate_rows")
        assert span.parent_remote is False
        assert (span.trace_id, span.parent_span_id) not in present
        lost_parents.add((span.trace_id, span.parent_span_id))
    assert len(lost_parents) == 2
    # The lost process_batch spans' own parents (import_batch, main thread) were exported.
    failed = [s for s in _by_name(spans, "import_batch") if s.status == 2]
    assert len(failed) == 2 and {s.trace_id for s in failed} == {t for t, _ in lost_parents}
