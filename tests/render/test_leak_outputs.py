"""Leaks and silent dispatches in every output: the JSON report's new fields (existing ones
unchanged), the terminal report, JUnit (valid against the common schema) and GitHub Actions.
Inputs are runs recorded from real apps over real OTLP (fixtures/leaks/)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from rich.console import Console

from ctxdoctor.cli import run
from ctxdoctor.diagnose import diagnose
from ctxdoctor.exitcodes import ExitCode
from ctxdoctor.findings import Report, Settings
from ctxdoctor.readers import read_paths
from ctxdoctor.render.github import step_summary, workflow_commands
from ctxdoctor.render.junit import junit_xml
from ctxdoctor.render.terminal import TerminalRenderer

ROOT = Path(__file__).resolve().parents[2]
LEAKS = ROOT / "fixtures" / "leaks"
EMITTER = LEAKS / "leak-emitter-first-server-low" / "dump.json"
SILENT = LEAKS / "silent-unflushed-server-low" / "dump.json"
SCHEMA = xmlschema.XMLSchema(ROOT / "tests" / "schemas" / "junit-10.xsd")


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ctxdoctor.toml above the test's cwd


def _report(path: Path, ratio: float | None = None) -> Report:
    return diagnose(read_paths([path]).spans, Settings(max_orphan_ratio=ratio))


def _analyze_json(tmp_path: Path, dump: Path, *extra: str) -> tuple[ExitCode, dict]:
    out = tmp_path / "report.json"
    code = run(["analyze", str(dump), "--format", "json", "--output", str(out), *extra])
    return code, json.loads(out.read_text())


def test_json_report_lists_leaks_with_wrong_and_likely_parent(tmp_path: Path) -> None:
    code, rep = _analyze_json(tmp_path, EMITTER)
    assert code == ExitCode.OK
    assert rep["summary"]["leaked_spans"] == len(rep["leaks"]) > 0
    leak = rep["leaks"][0]
    assert set(leak) >= {
        "trace_id",
        "span_id",
        "name",
        "service",
        "wrong_parent",
        "likely_parent",
        "confidence",
        "evidence",
    }
    assert set(leak["wrong_parent"]) == {"span_id", "name"}
    assert leak["wrong_parent"]["name"] == "subscribe audit"
    assert leak["likely_parent"] is None or set(leak["likely_parent"]) == {"trace_id", "span_id", "name"}
    assert len(leak["trace_id"]) == 32 and len(leak["span_id"]) == 16
    assert rep["silent_dispatches"] == [] and rep["summary"]["silent_dispatches"] == 0
    # The existing fields keep their meaning and place.
    for key in ("schema", "summary", "gate", "settings", "orphans", "missing_parents", "gaps", "warnings", "files"):
        assert key in rep


def test_json_report_lists_silent_dispatches_with_boundary_and_evidence(tmp_path: Path) -> None:
    _, rep = _analyze_json(tmp_path, SILENT)
    assert rep["summary"]["silent_dispatches"] == len(rep["silent_dispatches"]) > 0
    d = rep["silent_dispatches"][0]
    assert set(d) >= {"trace_id", "span_id", "name", "service", "boundary", "confidence", "evidence"}
    assert d["name"] == "export_report" and d["boundary"] == "process"
    assert any("from another unit" in e for e in d["evidence"])


def test_the_gate_counts_leaked_spans_as_broken_fragments(tmp_path: Path) -> None:
    code, rep = _analyze_json(tmp_path, EMITTER, "--max-orphan-ratio", "0.05")
    s = rep["summary"]
    assert s["suspected_orphans"] == 0 and s["lost_parents"] == 0, "the leaks alone fail this gate"
    assert s["broken_fragments"] == s["leaked_spans"]
    assert code == ExitCode.GATE_FAILED and rep["gate"]["failed"] is True


def test_terminal_report_shows_both_with_the_fix() -> None:
    for path, title, api in (
        (EMITTER, "Context leaks (spans under the wrong parent)", "context.with(msg.ctx"),
        (SILENT, "Silent dispatches (a worker exported nothing)", "def post_fork(server, worker)"),
    ):
        buf = io.StringIO()
        TerminalRenderer().render(_report(path), Console(file=buf, width=100, color_system=None))
        text = buf.getvalue()
        assert title in text
        assert "Why:" in text and "Fix:" in text
        assert api in " ".join(text.split())
    buf = io.StringIO()
    TerminalRenderer().render(_report(EMITTER), Console(file=buf, width=100, color_system=None))
    assert "leaked spans" in buf.getvalue()
    assert "subscribe audit -> audit order" in buf.getvalue()


def test_junit_has_a_case_per_leak_group_and_per_silent_group_and_stays_valid() -> None:
    leaks = ET.fromstring(junit_xml(_report(EMITTER, 0.05)).split("\n", 1)[1])
    SCHEMA.validate(junit_xml(_report(EMITTER, 0.05)))
    case = next(c for c in leaks.iter("testcase") if c.get("classname") == "ctxdoctor.leaks.orders-api")
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "ctxdoctor.ContextLeak"
    assert "context.with(msg.ctx" in (failure.text or "")
    silent_xml = junit_xml(_report(SILENT, 1.0))
    SCHEMA.validate(silent_xml)
    silent = ET.fromstring(silent_xml.split("\n", 1)[1])
    case = next(c for c in silent.iter("testcase") if c.get("classname") == "ctxdoctor.silent.report-service")
    assert case.find("failure") is None  # silence is reported, never in the ratio
    assert "post_fork" in (case.findtext("system-out") or "")
    props = {p.get("name"): p.get("value") for p in silent.iter("property")}
    assert props["silent-dispatches"] != "0" and props["leaked-spans"] == "0"


def test_github_annotations_and_summary_show_both() -> None:
    leak_report = _report(EMITTER, 0.05)
    lines = workflow_commands(leak_report)
    assert any(line.startswith("::error") and "context leak subscribe audit -> audit order" in line for line in lines)
    summary = step_summary(leak_report)
    assert "### Context leaks (spans under the wrong parent)" in summary
    assert "leaked spans **" in summary
    silent_report = _report(SILENT)
    assert any(
        "silent worker under export\\_report" in line or "silent worker under export_report" in line
        for line in workflow_commands(silent_report)
    )
    assert "### Silent dispatches (a worker exported nothing)" in step_summary(silent_report)
