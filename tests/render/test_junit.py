"""The JUnit report: valid against the common JUnit schema (tests/schemas/junit-10.xsd, checked
with xmlschema, as pytest checks its own), one test case per gap and per lost-parent group,
failing exactly when the gate fails, and the settings with their sources as properties."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import msgspec
import pytest
import xmlschema

from ctxdoctor.cli import run
from ctxdoctor.diagnose import diagnose
from ctxdoctor.exitcodes import ExitCode
from ctxdoctor.findings import Report, Settings
from ctxdoctor.readers import read_paths
from ctxdoctor.render.junit import junit_xml
from tests.helpers import SCENARIOS, SCHEMAS

SCHEMA = xmlschema.XMLSchema(SCHEMAS / "junit-10.xsd")


def _junit(tmp_path: Path, scenario: str, *args: str) -> tuple[int, ET.Element]:
    out = tmp_path / f"{scenario}.xml"
    code = run(
        [
            "analyze",
            str(SCENARIOS / scenario / "dump.json"),
            "-o",
            str(tmp_path / "r.txt"),
            "--report-junit",
            str(out),
            *args,
        ]
    )
    SCHEMA.validate(str(out))  # raises XMLSchemaValidationError with the offending element
    return int(code), ET.parse(out).getroot()


def _cases(root: ET.Element) -> dict[tuple[str, str], ET.Element]:
    return {(c.get("classname", ""), c.get("name", "")): c for c in root.iter("testcase")}


def _props(root: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in root.iter("property")}


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ctxdoctor.toml / [tool.ctxdoctor] above the test's cwd


def test_failing_gate_fails_the_summary_and_every_gap(tmp_path: Path) -> None:
    code, root = _junit(tmp_path, "node-worker-threads-naive", "--max-orphan-ratio", "0.05")
    assert code == ExitCode.GATE_FAILED
    cases = _cases(root)
    gate = cases[("ctxdoctor.gate", "orphan ratio")]
    failure = gate.find("failure")
    assert failure is not None and "> max-orphan-ratio 5.0%" in failure.get("message", "")
    gap = cases[("ctxdoctor.gaps.thumbnailer", "process_data -> worker_process")]
    gap_failure = gap.find("failure")
    assert gap_failure is not None
    assert gap_failure.get("type") == "ctxdoctor.PropagationGap"
    assert "propagation.inject(context.active(), carrier)" in (gap_failure.text or "")
    suite = root.find("testsuite")
    assert suite is not None
    failures = sum(1 for c in cases.values() if c.find("failure") is not None)
    assert failures == len(cases) >= 2
    assert suite.get("tests") == str(len(cases)) and suite.get("failures") == str(failures)
    assert root.get("failures") == str(failures)


def test_passing_gate_passes_and_keeps_details(tmp_path: Path) -> None:
    code, root = _junit(tmp_path, "node-worker-threads-naive", "--max-orphan-ratio", "1")
    assert code == ExitCode.OK
    cases = _cases(root)
    assert all(c.find("failure") is None for c in cases.values())
    gap = cases[("ctxdoctor.gaps.thumbnailer", "process_data -> worker_process")]
    out = gap.find("system-out")
    assert out is not None and "Fix: Carry the context into the worker thread" in (out.text or "")


def test_healthy_run_has_only_the_summary_case(tmp_path: Path) -> None:
    code, root = _junit(tmp_path, "node-worker-threads-propagated", "--max-orphan-ratio", "0.05")
    assert code == ExitCode.OK
    cases = _cases(root)
    assert list(cases) == [("ctxdoctor.gate", "orphan ratio")]
    assert root.get("failures") == "0"


def test_lost_parents_are_test_cases_too(tmp_path: Path) -> None:
    code, root = _junit(tmp_path, "node-worker-exit-unflushed", "--max-orphan-ratio", "0.05")
    assert code == ExitCode.GATE_FAILED
    lost = [c for (cls, _), c in _cases(root).items() if cls.startswith("ctxdoctor.lost-parents.")]
    report = diagnose(read_paths([SCENARIOS / "node-worker-exit-unflushed" / "dump.json"]).spans)
    expected = {
        f"{m.span.name} ({'remote' if m.parent_remote else 'local'} parent never arrived)"
        for m in report.missing_parents
        if m.lost
    }
    assert expected and {c.get("name") for c in lost} == expected
    assert all(c.find("failure") is not None for c in lost)


def test_properties_say_which_settings_and_where_from(tmp_path: Path) -> None:
    (tmp_path / "ctxdoctor.toml").write_text(
        'min-confidence = 0.6\nallow = [{service = "billing", name = "nightly"}]\n', encoding="utf-8"
    )
    _, root = _junit(tmp_path, "node-worker-threads-naive", "--max-orphan-ratio", "0.05")
    props = _props(root)
    assert props["max-orphan-ratio"] == "0.05"
    assert props["max-orphan-ratio.source"] == "command line"
    assert props["min-confidence"] == "0.6"
    assert props["min-confidence.source"] == "ctxdoctor.toml"
    assert props["allow"] == "service=billing name=nightly"
    assert props["allow.source"] == "ctxdoctor.toml"
    spans = read_paths([SCENARIOS / "node-worker-threads-naive" / "dump.json"]).spans
    assert props["spans"] == str(len(spans))
    assert props["file"].endswith("node-worker-threads-naive/dump.json")


def test_user_data_with_xml_hostile_characters_stays_valid(tmp_path: Path) -> None:
    dump = read_paths([SCENARIOS / "node-worker-threads-naive" / "dump.json"])
    report: Report = diagnose(dump.spans, Settings(max_orphan_ratio=0.0))
    assert report.gaps
    evil = "\x01wo]]>rker<&\"'\x1f\ud7ff"
    gaps = tuple(msgspec.structs.replace(g, orphan_name=evil, service="svc\x00") for g in report.gaps)
    report = msgspec.structs.replace(report, gaps=gaps, warnings=("bad\x0bline",))
    path = tmp_path / "evil.xml"
    path.write_text(junit_xml(report), encoding="utf-8")
    SCHEMA.validate(str(path))
    names = [c.get("name", "") for c in ET.parse(path).getroot().iter("testcase")]
    assert any("wo]]>rker<&\"'" in n for n in names)
