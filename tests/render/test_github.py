"""GitHub Actions outputs: with ``GITHUB_ACTIONS``/``GITHUB_STEP_SUMMARY`` set, the commands print
``::error``/``::warning`` workflow commands (escaped as the runner parses them) and append a
Markdown job summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from ctxdoctor.cli import run
from ctxdoctor.diagnose import diagnose
from ctxdoctor.exitcodes import ExitCode
from ctxdoctor.findings import Settings
from ctxdoctor.readers import read_paths
from ctxdoctor.render.github import MAX_PER_LEVEL, command, escape_data, escape_property, md, workflow_commands
from tests.helpers import SCENARIOS

NAIVE = SCENARIOS / "node-worker-threads-naive" / "dump.json"

_CMD = re.compile(r"^::(error|warning|notice)(?: ([^:]*))?::(.*)$")


def _unescape(s: str) -> str:
    return s.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",").replace("%25", "%")


def parse_commands(text: str) -> list[tuple[str, dict[str, str], str]]:
    """Workflow commands in ``text``, parsed the way the runner does (props split on ',', '=')."""
    out = []
    for line in text.splitlines():
        m = _CMD.match(line)
        if not m:
            continue
        props = {}
        if m.group(2):
            for part in m.group(2).split(","):
                key, _, value = part.partition("=")
                props[key] = _unescape(value)
        out.append((m.group(1), props, _unescape(m.group(3))))
    return out


@pytest.fixture
def gha(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    summary = tmp_path / "step_summary.md"
    summary.write_text("## earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return summary


def test_escaping_follows_the_runner() -> None:
    assert escape_data("50% done\r\nnext: a,b") == "50%25 done%0D%0Anext: a,b"
    assert escape_property("svc: a,b\n%") == "svc%3A a%2Cb%0A%25"
    line = command("error", "two\nlines: 5%", title="a: b, c", file="x,y.py", line=3)
    assert "\n" not in line
    assert line == "::error title=a%3A b%2C c,file=x%2Cy.py,line=3::two%0Alines: 5%25"
    assert parse_commands(line) == [("error", {"title": "a: b, c", "file": "x,y.py", "line": "3"}, "two\nlines: 5%")]


def test_markdown_cells_are_inert() -> None:
    assert md("a|b <script> *x* `y`\nz") == "a\\|b \\<script\\> \\*x\\* \\`y\\` z"


def test_failed_gate_annotates_errors_and_summarises(gha: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", str(NAIVE), "--max-orphan-ratio", "0.05"]) == ExitCode.GATE_FAILED
    cmds = parse_commands(capsys.readouterr().out)
    assert cmds, "no workflow commands printed"
    assert {level for level, _, _ in cmds} == {"error"}
    gate = [c for c in cmds if c[1].get("title") == "ctxdoctor: gate failed"]
    assert len(gate) == 1 and "> max-orphan-ratio 5.0%" in gate[0][2]
    gap = [c for c in cmds if c[1].get("title") == "ctxdoctor: thumbnailer: process_data -> worker_process"]
    assert len(gap) == 1
    message = gap[0][2]
    assert "lost the context of 'process_data' across a thread boundary" in message
    assert "Fix: Carry the context into the worker thread" in message
    assert "\n1. In the dispatching span" in message  # multi-line messages survive the escaping

    text = gha.read_text(encoding="utf-8")
    assert text.startswith("## earlier step\n")  # appended, never overwritten
    assert "## ctxdoctor: gate **failed** ❌" in text
    assert "| 1 | thumbnailer | process\\_data → worker\\_process | thread (nodejs) |" in text
    assert "| max-orphan-ratio | 0.05 | command line |" in text
    assert "### Fixes" in text and "```javascript" in text
    assert "propagation.inject(context.active(), carrier);" in text


def test_passing_gate_only_warns(gha: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", str(NAIVE), "--max-orphan-ratio", "1"]) == ExitCode.OK
    cmds = parse_commands(capsys.readouterr().out)
    assert cmds and {level for level, _, _ in cmds} == {"warning"}
    assert "## ctxdoctor: gate passed ✅" in gha.read_text(encoding="utf-8")


def test_healthy_dump_prints_no_annotations(gha: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = SCENARIOS / "node-worker-threads-propagated" / "dump.json"
    assert run(["check", str(dump), "--max-orphan-ratio", "0.05"]) == ExitCode.OK
    assert parse_commands(capsys.readouterr().out) == []
    assert "No propagation gaps and no lost parents." in gha.read_text(encoding="utf-8")


def test_gate_error_points_at_the_config_line(gha: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (gha.parent / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n[tool.ctxdoctor]\nmax-orphan-ratio = 0.05\n', encoding="utf-8"
    )
    assert run(["check", str(NAIVE)]) == ExitCode.GATE_FAILED
    gate = [c for c in parse_commands(capsys.readouterr().out) if c[1].get("title") == "ctxdoctor: gate failed"]
    assert gate[0][1]["file"] == "pyproject.toml" and gate[0][1]["line"] == "5"
    assert "| max-orphan-ratio | 0.05 | pyproject.toml \\[tool.ctxdoctor\\] |" in gha.read_text(encoding="utf-8")


def test_json_on_stdout_stays_json(gha: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["analyze", str(NAIVE), "-f", "json", "--max-orphan-ratio", "0.05"]) == ExitCode.GATE_FAILED
    captured = capsys.readouterr()
    assert json.loads(captured.out)["gate"]["failed"] is True
    assert parse_commands(captured.err), "annotations moved to stderr when stdout carries JSON"


def test_nothing_without_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.chdir(tmp_path)
    run(["check", str(NAIVE), "--max-orphan-ratio", "0.05"])
    assert parse_commands(capsys.readouterr().out) == []


def test_annotations_are_capped_per_level() -> None:
    # GitHub keeps 10 annotations per level and step: the worst findings first, the rest counted.
    report = diagnose(read_paths([NAIVE]).spans, Settings(max_orphan_ratio=0.0))
    gap = report.gaps[0]
    many = tuple(msgspec.structs.replace(gap, orphan_name=f"work_{i}") for i in range(15))
    cmds = parse_commands("\n".join(workflow_commands(msgspec.structs.replace(report, gaps=many))))
    assert len(cmds) == MAX_PER_LEVEL and {c[0] for c in cmds} == {"error"}
    assert cmds[0][1]["title"] == "ctxdoctor: gate failed"
    assert [c[1]["title"].rsplit(" ", 1)[-1] for c in cmds[1:-1]] == [f"work_{i}" for i in range(8)]
    assert cmds[-1][2].startswith("7 more finding(s)")


def test_format_github_prints_the_annotations_once(gha: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["analyze", str(NAIVE), "-f", "github", "--max-orphan-ratio", "0.05"]) == ExitCode.GATE_FAILED
    captured = capsys.readouterr()
    gate = [c for c in parse_commands(captured.out) if c[1].get("title") == "ctxdoctor: gate failed"]
    assert len(gate) == 1 and parse_commands(captured.err) == []
    assert "## ctxdoctor: gate **failed** ❌" in captured.out
