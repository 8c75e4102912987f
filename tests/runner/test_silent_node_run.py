"""``ctxdoctor run`` around the Node.js silent-worker app (fixtures/apps/node/silent_workers.js)
with forked children: children that never start an SDK, or are killed before their batch is
exported, are named as silent processes with the Node.js fix; children that shut their SDK down
before they exit are not. Spans alone cannot tell these runs apart (every dispatch has the same
hole), which is why the process side matters."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import NODE_APPS, needs_node, run_ctxdoctor


def _run(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GITHUB_", "CTX_", "CTXDOCTOR_"))}
    # 120 tasks of ~20 ms, two at a time, keep each child alive well past the 1 s a silent process
    # needs; a 30 s schedule delay means a killed child has exported nothing, however slow the machine.
    env.update(CTX_MODE=mode, CTX_WORKER="fork", CTX_WORKERS="2", CTX_TASKS="120", OTEL_BSP_SCHEDULE_DELAY="30000")
    run = ["run", "--no-color", "--report-json", "report.json", "--output", "dump.json"]
    done = run_ctxdoctor([*run, "--", "node", str(NODE_APPS / "silent_workers.js")], tmp_path, env, timeout=120)
    return done, json.loads((tmp_path / "report.json").read_text())


@needs_node
@pytest.mark.parametrize("mode", ["no_sdk", "unflushed"])
def test_forked_children_that_export_nothing_are_silent_processes_with_the_node_fix(tmp_path: Path, mode: str) -> None:
    done, report = _run(tmp_path, mode)
    assert done.returncode == 0, done.stderr
    silent = report["silent_processes"]
    assert len(silent) == 2, silent
    parents = {p["parent_pid"] for p in silent}
    assert len(parents) == 1 and None not in parents
    for p in silent:
        assert "silent_workers_task.js" in p["command"]
        assert p["lifetime_s"] >= 1.0
        assert "await sdk.shutdown()" in p["fix"]["apis"]


@needs_node
def test_forked_children_that_flush_before_they_exit_are_not_silent(tmp_path: Path) -> None:
    done, report = _run(tmp_path, "flushed")
    assert done.returncode == 0, done.stderr
    assert report["silent_processes"] == []
    assert report["silent_dispatches"] == [] and report["leaks"] == []
