"""``ctxdoctor run`` around a real pre-fork Python server (fixtures/apps/python/prefork_server.py):
forked workers that inherited the master's SDK and leave through ``os._exit`` never export, and
``run`` names each of them with the fix; the same server with per-worker init after the fork is
clean. The app writes its workers' pids and spans, so the truth is the app's, not the test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import xmlschema

from ctxdoctor.readers import read_paths
from tests.helpers import ROOT, run_ctxdoctor


def _run_server(
    tmp_path: Path, mode: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], list[dict[str, Any]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GITHUB_", "CTX_", "CTXDOCTOR_"))}
    env.update(CTX_MODE=mode, CTX_WORKERS="2", CTX_REQUESTS="16", CTXDOCTOR_TRUTH=str(tmp_path / "truth.jsonl"))
    # A worker that lives less than the batch's schedule delay exports nothing before os._exit; a
    # loaded CI machine must not stretch a worker's life past the SDK's default 5 s.
    env["OTEL_BSP_SCHEDULE_DELAY"] = "30000"
    # As in GitHub Actions: the job summary gets the findings too.
    env.update(GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"))
    reports = ["--report-json", "report.json", "--report-junit", "report.xml", "--output", "dump.json"]
    app = ROOT / "fixtures" / "apps" / "python" / "prefork_server.py"
    done = run_ctxdoctor(["run", "--no-color", *reports, "--", sys.executable, str(app)], tmp_path, env, timeout=90)
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines() if line.strip()]
    return done, json.loads((tmp_path / "report.json").read_text()), truth


def test_preloaded_workers_that_never_export_are_named_with_the_fork_fix(tmp_path: Path) -> None:
    done, report, truth = _run_server(tmp_path, "preload")
    assert done.returncode == 0, done.stderr
    workers = {r["pid"]: r for r in truth if r["label"] == "worker"}
    assert len(workers) == 2 and all(w["silent"] and w["spans"] for w in workers.values())
    # The workers did serve: they started spans, and none of them arrived.
    dumped = {s.span_id for s in read_paths([tmp_path / "dump.json"]).spans}
    started = {int(ref["span_id"], 16) for w in workers.values() for ref in w["spans"]}
    assert started and not started & dumped
    silent = {p["pid"]: p for p in report["silent_processes"]}
    assert set(silent) == set(workers)
    master = {p["parent_pid"] for p in silent.values()}
    assert len(master) == 1 and master != {None}
    for p in silent.values():
        assert "prefork_server.py" in p["command"]
        assert p["lifetime_s"] >= 1.0
        assert "os.register_at_fork(after_in_child=...)" in p["fix"]["apis"]
    assert "Silent process: pid" in done.stdout and "register_at_fork" in done.stdout
    summary = (tmp_path / "summary.md").read_text()
    assert all(f"pid {pid}" in summary for pid in workers)
    assert "`os.register_at_fork(after_in_child=...)`" in summary
    xmlschema.XMLSchema(ROOT / "tests" / "schemas" / "junit-10.xsd").validate(str(tmp_path / "report.xml"))
    junit = ET.parse(tmp_path / "report.xml").getroot()
    cases = {c.get("name"): c for c in junit.iter("testcase") if c.get("classname") == "ctxdoctor.silent-processes"}
    assert {name.split()[1] for name in cases} == {str(pid) for pid in workers}
    for c in cases.values():
        assert "register_at_fork" in (c.findtext("system-out") or "") and c.find("failure") is None
    props = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert props["silent-processes"] == "2"


def test_workers_initialised_after_the_fork_are_clean(tmp_path: Path) -> None:
    done, report, truth = _run_server(tmp_path, "postfork")
    assert done.returncode == 0, done.stderr
    workers = [r for r in truth if r["label"] == "worker"]
    assert len(workers) == 2 and not any(w["silent"] for w in workers)
    dumped = {s.span_id for s in read_paths([tmp_path / "dump.json"]).spans}
    assert {int(ref["span_id"], 16) for w in workers for ref in w["spans"]} <= dumped
    assert report["silent_processes"] == []
    junit = ET.parse(tmp_path / "report.xml").getroot()
    assert not [c for c in junit.iter("testcase") if c.get("classname") == "ctxdoctor.silent-processes"]
    assert report["leaks"] == [] and report["silent_dispatches"] == []
