"""The recorded scenarios' real apps under ``ctxdoctor run`` with its probe: every orphan the app
itself records (its ground truth) is reported as observed, with its true parent and the app's
own dispatch line; every fixed run and control is clean.

Sizes are cut down from the recordings (a Node.js worker costs about a second to start on a
busy 2-core machine); the shapes (concurrency, pools, queueing) are the scenarios' own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.runner.probe_runs import APPS, parent_problems, run_scenario, scenario

HAS_NODE = (
    shutil.which("node") is not None and (APPS / "node" / "node_modules" / "@opentelemetry" / "sdk-node").is_dir()
)
needs_node = pytest.mark.skipif(not HAS_NODE, reason="needs Node.js and fixtures/apps/node/node_modules (make node)")

SMALLER = {
    "node-worker-threads-naive": {"CTX_TASKS": "6", "CTX_CONCURRENCY": "3"},
    "node-piscina-naive": {"CTX_TASKS": "16"},
    "node-fork-naive": {"CTX_TASKS": "10"},
    "node-fork-oneshot-naive": {"CTX_TASKS": "4", "CTX_CONCURRENCY": "2"},
    "python-threadpool-naive": {"CTX_REQUESTS": "4"},
    "python-mixed-c32": {"CTX_CALLERS": "8", "CTX_REQUESTS": "4"},
    "python-thread-naive": {"CTX_REQUESTS": "4"},
    "python-run-in-executor-naive": {"CTX_REQUESTS": "12"},
    "python-multiprocessing-naive": {"CTX_REQUESTS": "3"},
    "node-worker-threads-propagated": {"CTX_TASKS": "6", "CTX_CONCURRENCY": "3"},
    "node-piscina-propagated": {"CTX_TASKS": "16"},
    "node-fork-propagated": {"CTX_TASKS": "10"},
    "node-healthy-server": {"CTX_TASKS": "20"},
    "python-threadpool-copied": {"CTX_REQUESTS": "4"},
    "python-to-thread": {"CTX_REQUESTS": "12"},
    "python-multiprocessing-fixed": {"CTX_REQUESTS": "3"},
    "python-thread-instrumented": {"CTX_REQUESTS": "4"},
    "healthy-server": {"CTX_REQUESTS": "12"},
}
NAIVE = [n for n in SMALLER if scenario(n)["kind"] == "naive"]
CLEAN = [n for n in SMALLER if scenario(n)["kind"] != "naive"]


def _marks(name: str) -> list[pytest.MarkDecorator]:
    return [needs_node] if name.startswith("node-") else []


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in NAIVE])
def test_every_orphan_of_a_naive_run_is_observed_with_its_parent_and_line(name: str, tmp_path: Path) -> None:
    result = run_scenario(name, tmp_path, **SMALLER[name])
    assert result.proc.returncode == 0, result.proc.stderr[-3000:]
    orphans = [r for r in result.truth if r["label"] == "orphan"]
    assert orphans, "the app recorded no orphan: the scenario did not run as declared"
    app_file = Path(scenario(name)["command"][-1]).name
    assert parent_problems(result, app_file) == []
    obs = result.report["observation"]
    assert obs["observed_orphans"] == len(orphans) and obs["inferred_orphans"] == 0
    # The site is the app's own line: the line really holds the dispatch call.
    site = result.report["orphans"][0]["dispatch_site"]
    line = Path(site["file"]).read_text().splitlines()[site["line"] - 1]
    assert any(
        call in line
        for call in ("Worker(", ".run(", ".send(", "fork(", "submit(", "run_in_executor(", "start(", "_async(")
    ), line


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in CLEAN])
def test_fixed_runs_and_controls_are_clean(name: str, tmp_path: Path) -> None:
    result = run_scenario(name, tmp_path, **SMALLER[name])
    assert result.proc.returncode == 0, result.proc.stderr[-3000:]
    assert result.report["orphans"] == []
    assert result.report["silent_workers"] == []
    assert result.report["observation"]["dispatches"] > 0 or name.endswith("healthy-server")
