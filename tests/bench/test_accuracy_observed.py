"""bench/accuracy_observed.py on one small corpus cell: both modes are scored on the same run.

The script runs in its own interpreter, as the benchmark runs (tests do not import bench/). A
naive thread hand-off's orphans are all seen by the probe, so the observed mode must find each
with its true parent; the inferred modes' figures depend on timing and are only checked to be
there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

CELL = "py-server-thread-await-c4-interval-idle-a1-naive-s3"


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "accuracy_observed.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_the_default_selection_covers_every_hand_off_of_both_runtimes_briefly() -> None:
    done = _bench("--list")
    assert done.returncode == 0, done.stderr
    cells = done.stdout.split()
    assert 8 <= len(cells) <= 20
    python = {c.split("-")[2] for c in cells if c.startswith("py-") and "-naive-" in c}
    assert python == {"thread", "pool", "process_pool", "child", "executor", "fire", "timer"}
    for runtime in ("py-", "node-"):
        assert any(c.startswith(runtime) and "-fixed-" in c for c in cells)
        assert any(c.startswith(runtime) and "-naive-" in c for c in cells)


def test_one_cell_is_scored_in_both_modes_on_the_same_run(tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    done = _bench("--only", CELL, "--json", str(out))
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["left_out"] == [] and [c["cell"] for c in data["cells"]] == [CELL]
    pooled = data["pooled"]["all"]
    observed = pooled["observed"]
    assert observed["orphans"] > 0
    assert (observed["precision"], observed["recall"], observed["parent"]) == (1.0, 1.0, 1.0)
    assert data["observed_by_probe"] == data["observed_flagged"] == observed["orphans"]
    assert pooled["inferred (same run)"]["orphans"] == observed["orphans"]  # the same run's truth
    assert pooled["inferred (--no-probe run)"]["orphans"] > 0
    assert "observed" in done.stdout and "inferred (--no-probe run)" in done.stdout
