"""``ctxdoctor run`` around the Node.js leak app (fixtures/apps/node/context_leaks.js): a listener
bound at subscribe time and an interval set up inside a request are leaks the statistics find, and
the probe saw each set up: every reported leak is observed, named at the app's line that set its
callback up, and matches the app's own ground truth. The fixed runs report no leak."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import NODE_APPS, needs_node, run_ctxdoctor

APP = NODE_APPS / "context_leaks.js"


def _run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], list[dict[str, Any]]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GITHUB_", "CTX_", "CTXDOCTOR_"))}
    base.update(CTX_TASKS="16", CTX_CONCURRENCY="2", CTXDOCTOR_TRUTH=str(tmp_path / "truth.jsonl"), **env)
    run = ["run", "--no-color", "--report-json", "report.json", "--output", "dump.json"]
    done = run_ctxdoctor([*run, "--", "node", str(APP)], tmp_path, base, timeout=120)
    truth = [json.loads(x) for x in (tmp_path / "truth.jsonl").read_text().splitlines()]
    return done, json.loads((tmp_path / "report.json").read_text()), truth


def _line(text: str) -> int:
    return next(i for i, x in enumerate(APP.read_text().splitlines(), 1) if text in x)


@needs_node
@pytest.mark.parametrize(
    ("mode", "api", "source"),
    [
        ("emitter", "EventEmitter.on", "bus.on('order', context.bind(context.active(), onOrder))"),
        ("interval", "setInterval", "setInterval(() => void flushTick(), tickMs)"),
    ],
)
def test_a_leaks_callback_is_named_at_the_line_that_set_it_up(tmp_path: Path, mode: str, api: str, source: str) -> None:
    done, report, truth = _run(tmp_path, CTX_MODE=mode)
    assert done.returncode == 0, done.stderr
    leaks = report["leaks"]
    assert leaks, "the statistics found no leak: the run did not go as declared"
    true_leaks = {t["span_id"] for t in truth if t["label"] == "leak"}
    assert {lk["span_id"] for lk in leaks} <= true_leaks
    for lk in leaks:
        assert lk["observed"] and lk["registration_api"] == api, lk
        site = lk["registration_site"]
        assert (site["file"], site["line"]) == (str(APP), _line(source))
        assert lk["evidence"][0].startswith("seen at registration: ")
    assert report["observation"]["observed_leaks"] == len(leaks)
    assert f"registered at {APP}:{_line(source)}" in done.stdout.replace("\n", "")


@needs_node
@pytest.mark.parametrize("mode", ["emitter", "interval"])
def test_the_fixed_apps_report_no_leak_and_nothing_observed(tmp_path: Path, mode: str) -> None:
    done, report, _ = _run(tmp_path, CTX_MODE=mode, CTX_FIXED="1")
    assert done.returncode == 0, done.stderr
    assert report["leaks"] == []
    assert report["observation"]["observed_leaks"] == 0
