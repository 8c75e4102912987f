"""Every output carries the dispatch site, and a leak's registration site, that the probe saw
(hand-made facts, see tests/diagnose)."""

from __future__ import annotations

import json

from rich.console import Console

from ctxdoctor.diagnose import diagnose
from ctxdoctor.diagnose.observed import apply_observations
from ctxdoctor.findings import Report, Settings
from ctxdoctor.probe.facts import decode
from ctxdoctor.render.github import step_summary, workflow_commands
from ctxdoctor.render.json_report import report_dict
from ctxdoctor.render.junit import junit_xml
from ctxdoctor.render.terminal import TerminalRenderer
from tests.diagnose.test_observed import SITE, _flusher_leak, _registration, ref, two_requests, worker_facts


def _report() -> Report:
    spans = two_requests()
    return apply_observations(diagnose(spans, Settings(max_orphan_ratio=0.0)), spans, decode(worker_facts()))


def test_json_has_the_site_and_says_observed() -> None:
    data = json.loads(json.dumps(report_dict(_report())))
    assert {o["dispatch_site"]["line"] for o in data["orphans"]} == {33}
    assert all(o["observed"] for o in data["orphans"])
    assert data["gaps"][0]["dispatch_site"] == SITE
    assert data["observation"]["observed_orphans"] == 2


def test_github_annotations_sit_on_the_dispatch_line_inside_the_checkout() -> None:
    report = _report()
    inside = [c for c in workflow_commands(report, workspace="/app") if "process_data -> worker_process" in c]
    assert len(inside) == 1 and "file=server.js,line=33,col=22::" in inside[0]
    outside = [c for c in workflow_commands(report, workspace="/elsewhere") if "worker_process" in c]
    assert outside and "file=" not in outside[0]
    assert "dispatched at `/app/server.js:33:22 (handle)`" in step_summary(report)


def test_junit_names_the_dispatch_line() -> None:
    assert "dispatched at: /app/server.js:33:22 (handle)" in junit_xml(_report())


def _leak_report() -> Report:
    spans = _flusher_leak()
    return apply_observations(diagnose(spans), spans, decode(_registration(ref(1, 50))))


def test_every_output_names_a_leaks_registration_line() -> None:
    report = _leak_report()
    data = json.loads(json.dumps(report_dict(report)))
    assert data["leaks"] and all(lk["observed"] and lk["registration_site"] == SITE for lk in data["leaks"])
    assert {lk["registration_api"] for lk in data["leaks"]} == {"setInterval"}
    assert data["observation"]["observed_leaks"] == 12
    assert "registered at: /app/server.js:33:22 (handle) (setInterval; observed by the probe)" in junit_xml(report)
    [leak] = [c for c in workflow_commands(report, workspace="/app") if "context leak" in c]
    assert "file=server.js,line=33,col=22::" in leak


def test_the_terminal_names_a_leaks_registration_line() -> None:
    console = Console(record=True, width=200)
    TerminalRenderer().render(_leak_report(), console)
    text = console.export_text()
    assert "registered at /app/server.js:33:22 (handle)  setInterval (observed by the probe)" in text
    assert "12 leaked span(s) observed at their callback's registration" in text
