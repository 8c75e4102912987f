"""Running a recorded scenario's real app under ``ctxdoctor run`` and reading what it reported.

The apps write their own ground truth (``$CTXDOCTOR_TRUTH``: every root, and for each orphan the
span that dispatched it), so a run can be checked against what really happened in that run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import run_ctxdoctor

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "fixtures" / "scenarios"
APPS = ROOT / "fixtures" / "apps"


@dataclass
class RunResult:
    proc: subprocess.CompletedProcess[str]
    report: dict[str, Any]
    truth: list[dict[str, Any]]
    facts: Path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GITHUB_", "CTX_", "CTXDOCTOR_"))}
    env.update(extra)
    return env


def scenario(name: str) -> dict[str, Any]:
    return json.loads((SCENARIOS / name / "scenario.json").read_text())


def argv(spec: dict[str, Any], python: str = sys.executable) -> list[str]:
    return [a.replace("{apps}", str(APPS)).replace("{python}", python) for a in spec["command"]]


def run_scenario(name: str, tmp: Path, *args: str, timeout: float = 120, **env: str) -> RunResult:
    spec = scenario(name)
    truth = tmp / "truth.jsonl"
    truth.touch()
    environ = clean_env(**{**spec["env"], "CTXDOCTOR_TRUTH": str(truth), **env})
    if spec["protocol"] != "grpc":
        environ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = spec["protocol"]
    reports = ["-o", str(tmp / "dump.json"), "--report-json", str(tmp / "report.json")]
    proc = run_ctxdoctor(["run", *reports, *args, "--", *argv(spec)], ROOT, environ, timeout=timeout)
    report = json.loads((tmp / "report.json").read_text()) if (tmp / "report.json").exists() else {}
    records = [json.loads(x) for x in truth.read_text().splitlines() if x.strip()]
    return RunResult(proc, report, records, tmp / "dump.json.probe.jsonl")


def parent_problems(result: RunResult, app_file: str) -> list[str]:
    """Every truth orphan must be reported, observed, with its true parent and a site in ``app_file``."""
    reported = {(o["trace_id"], o["span_id"]): o for o in result.report.get("orphans", [])}
    problems = []
    for rec in result.truth:
        if rec["label"] != "orphan":
            continue
        o = reported.get((rec["trace_id"], rec["span_id"]))
        what = f"{rec['name']} {rec['span_id']}"
        if o is None:
            problems.append(f"{what}: not reported")
            continue
        want = rec["intended_parent"]
        got = o.get("likely_parent") or {}
        if (got.get("trace_id"), got.get("span_id")) != (want["trace_id"], want["span_id"]):
            problems.append(f"{what}: parent {got.get('span_id')} {got.get('name')}, truly {want['span_id']}")
        if not o.get("observed"):
            problems.append(f"{what}: inferred, not observed")
        site = o.get("dispatch_site") or {}
        if os.path.basename(site.get("file", "")) != app_file:
            problems.append(f"{what}: dispatch site {site}")
    truth_orphans = {(r["trace_id"], r["span_id"]) for r in result.truth if r["label"] == "orphan"}
    for key, o in reported.items():
        if key not in truth_orphans:
            problems.append(f"{o['name']} {key[1]}: reported, but the app says it is no orphan")
    return problems
