"""What the command line looks like: help that reads like ruff's or httpie's, colour that
``NO_COLOR`` and ``--no-color`` turn off, and ``--quiet`` for CI logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ctxdoctor.cli import run
from ctxdoctor.exitcodes import ExitCode
from tests.helpers import SCENARIOS

NAIVE = SCENARIOS / "node-worker-threads-naive" / "dump.json"
COMMANDS = ["analyze", "check", "run", "listen", "convert"]
#: Typer's type labels (``<bool>``, ``<list[Path]>``, ``<float range>``) and usage braces (``{paths}...``).
_TYPE_LABEL = re.compile(r"<[A-Za-z_\[\]| ]+>|\{\w+\}")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\w \s*[,.;:)](?=\s|$)")
#: SGR parameters that set a colour (foreground or background, 8/16/256/true colour).
_COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert run([*argv, "--help"]) == ExitCode.OK
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_metavars_not_type_labels(capsys: pytest.CaptureFixture[str], command: str | None) -> None:
    text = _help(capsys, *([command] if command else []))
    assert text.startswith("Usage: ctxdoctor")
    assert not _TYPE_LABEL.findall(text), _TYPE_LABEL.findall(text)
    assert not _SPACE_BEFORE_PUNCTUATION.findall(text), _SPACE_BEFORE_PUNCTUATION.findall(text)
    assert "..." not in text.replace("DUMP...", "").replace("COMMAND...", "").replace("[ARGS]...", "")


def test_help_names_the_arguments_as_a_person_would(capsys: pytest.CaptureFixture[str]) -> None:
    assert "Usage: ctxdoctor analyze [OPTIONS] DUMP..." in _help(capsys, "analyze")
    assert "Usage: ctxdoctor run [OPTIONS] -- COMMAND..." in _help(capsys, "run")
    listen = _help(capsys, "listen")
    assert "--min-confidence FLOAT" in listen and "--config FILE" in listen and "-j, --jobs N" in listen
    # The command list gives each command one whole line, not a sentence cut off with "...".
    root = _help(capsys)
    for command in COMMANDS:
        (line,) = [x for x in root.splitlines() if x.strip().startswith(command + " ")]
        assert not line.endswith("...")


def _analyze_output(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    run(["analyze", str(NAIVE), *args])
    return capsys.readouterr().out


def test_colour_on_a_terminal_and_off_with_no_color(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich's switch for "this is a terminal"
    monkeypatch.setenv("TERM", "xterm-256color")
    assert _COLOUR.search(_analyze_output(capsys)), "a terminal gets colour"
    plain = _analyze_output(capsys, "--no-color")
    assert "\x1b[" not in plain and "process_data -> worker_process" in plain
    monkeypatch.setenv("NO_COLOR", "1")
    assert not _COLOUR.search(_analyze_output(capsys))


def test_quiet_prints_nothing_and_the_exit_code_and_files_still_tell(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    code = run(["check", str(NAIVE), "--max-orphan-ratio", "0.01", "--quiet", "--report-json", str(report)])
    out, err = capsys.readouterr()
    assert code == ExitCode.GATE_FAILED
    assert out == "" and err == ""
    assert json.loads(report.read_text())["gate"]["failed"] is True
    # An error is still said, quiet or not.
    assert run(["analyze", str(tmp_path / "missing.json"), "-q"]) != ExitCode.OK
    assert "missing.json" in capsys.readouterr().err


def test_run_quiet_keeps_only_warnings(tmp_path: Path) -> None:
    """``run --quiet``: no banner, no report; the warning that no spans arrived is still said."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GITHUB_"))}
    args = ["run", "-o", str(tmp_path / "dump.json"), "--drain", "1", "--", sys.executable, "-c", "pass"]
    loud = subprocess.run(
        [sys.executable, "-m", "ctxdoctor", *args], env=env, capture_output=True, text=True, timeout=60
    )
    quiet = subprocess.run(
        [sys.executable, "-m", "ctxdoctor", *args[:1], "--quiet", *args[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loud.returncode == quiet.returncode == 0, (loud.stderr, quiet.stderr)
    assert "receiving OTLP" in loud.stderr and "spans in" in loud.stdout
    assert quiet.stdout == ""
    assert "receiving OTLP" not in quiet.stderr and "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" not in quiet.stderr
    assert "no spans arrived" in quiet.stderr
