"""The command line end to end: exit codes, formats, errors, and a golden report."""

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
from ctxdoctor.findings import Settings
from ctxdoctor.readers import parallel
from tests.helpers import GOLDEN, SCENARIOS, line, request_json, span_json

NAIVE = SCENARIOS / "node-worker-threads-naive" / "dump.json"
PROPAGATED = SCENARIOS / "node-worker-threads-propagated" / "dump.json"
PY_NAIVE = SCENARIOS / "python-threadpool-naive" / "dump.json"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    out, err = capsys.readouterr()
    return int(code), out, err


def test_analyze_names_gap_parent_boundary_and_fix(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "analyze", str(NAIVE))
    assert code == ExitCode.OK
    assert "process_data -> worker_process" in out
    assert "Boundary: thread" in out
    assert "propagation.inject(context.active(), carrier)" in out
    assert "\x1b[" not in out  # no colour when stdout is not a terminal


def test_analyze_healthy_dump_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "analyze", str(PROPAGATED))
    assert code == ExitCode.OK and "No propagation gaps" in out


def test_json_report_schema_and_hex_ids(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "analyze", str(NAIVE), "--format", "json")
    assert code == ExitCode.OK
    rep = json.loads(out)
    assert rep["schema"] == "ctxdoctor.report/v1"
    assert set(rep["summary"]) >= {"spans", "traces", "roots", "suspected_orphans", "missing_parents", "orphan_ratio"}
    # The recording's 24 worker roots are all orphans; the shipped threshold reports most of them
    # (one scores like chance), and nothing else.
    assert rep["summary"]["suspected_orphans"] == len(rep["orphans"])
    assert 22 <= len(rep["orphans"]) <= 24
    assert {o["name"] for o in rep["orphans"]} == {"worker_process"}
    o = rep["orphans"][0]
    assert set(o) >= {"trace_id", "span_id", "name", "service", "boundary", "confidence", "likely_parent"}
    assert re.fullmatch(r"[0-9a-f]{32}", o["trace_id"]) and re.fullmatch(r"[0-9a-f]{16}", o["span_id"])
    assert o["likely_parent"]["name"] == "process_data"
    assert re.fullmatch(r"[0-9a-f]{16}", o["likely_parent"]["span_id"])
    g = rep["gaps"][0]
    assert (g["parent_name"], g["orphan_name"], g["boundary"], g["runtime"]) == (
        "process_data",
        "worker_process",
        "thread",
        "nodejs",
    )
    assert g["occurrences"] == len(rep["orphans"])
    assert "propagation.inject(context.active(), carrier)" in g["fix"]["apis"]


def test_json_to_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "report.json"
    code, out, _ = cli(capsys, "analyze", str(PY_NAIVE), "-f", "json", "-o", str(out_file))
    assert code == ExitCode.OK and out == ""
    assert json.loads(out_file.read_text())["gaps"][0]["orphan_name"] == "render_chart"


def test_check_gate_fails_on_naive_and_passes_on_propagated(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "check", str(NAIVE), "--max-orphan-ratio", "0.01")
    assert code == ExitCode.GATE_FAILED and "FAILED" in out and "process_data -> worker_process" in out
    code, out, _ = cli(capsys, "check", str(PROPAGATED), "--max-orphan-ratio", "0.01")
    assert code == ExitCode.OK and "passed" in out


def test_analyze_gate_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "analyze", str(NAIVE), "--max-orphan-ratio", "0.6")[0] == ExitCode.OK
    assert cli(capsys, "analyze", str(NAIVE), "--max-orphan-ratio", "0.4")[0] == ExitCode.GATE_FAILED


def test_malformed_input_exit_3_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = line(request_json([span_json(1, 1, "a", 0, 1)]))
    bad = tmp_path / "bad.json"
    bad.write_text(good + "\n" + good[:-5] + "oops\n" + good + "\n")
    code, _, err = cli(capsys, "analyze", str(bad))
    assert code == ExitCode.BAD_INPUT
    assert f"{bad}:2" in err and "malformed JSON" in err


def test_truncated_input_warns_and_analyses_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = NAIVE.read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) - 200])
    # What is under test is that a cut last line warns and the rest is analysed: a threshold
    # below the shipped one keeps the verdict independent of one lost root's share of the group.
    code, out, _ = cli(capsys, "analyze", str(cut), "--min-confidence", "0.5")
    assert code == ExitCode.OK
    assert "truncated" in out and "process_data -> worker_process" in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "check", str(NAIVE))[0] == ExitCode.USAGE  # --max-orphan-ratio is required
    assert cli(capsys, "check", str(NAIVE), "--max-orphan-ratio", "1.5")[0] == ExitCode.USAGE
    assert cli(capsys, "analyze", str(NAIVE), "--format", "yaml")[0] == ExitCode.USAGE
    assert cli(capsys, "nonsense")[0] == ExitCode.USAGE


def test_missing_file_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "analyze", str(tmp_path / "nope.json"))
    assert code == ExitCode.BAD_INPUT and "no such file" in err


def test_console_script_and_module_entry_points() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ctxdoctor", "check", str(NAIVE), "--max-orphan-ratio", "0.1"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert proc.returncode == 1, proc.stderr
    assert max(len(x) for x in proc.stdout.splitlines()) <= 80


def normalise(report: dict) -> dict:
    """Keep what a user reads and what must not drift silently; drop ids and times."""
    return {
        "summary": report["summary"],
        "gaps": [
            {k: g[k] for k in ("service", "parent_name", "orphan_name", "boundary", "occurrences", "runtime")}
            | {"fix": g["fix"]["title"]}
            for g in report["gaps"]
        ],
        "missing_parents": sorted(
            {(m["service"], m["name"], m["parent_remote"], m["lost"]) for m in report["missing_parents"]}
        ),
    }


@pytest.mark.parametrize("jobs", ["1", "3"])
@pytest.mark.parametrize(
    "scenario", ["node-worker-threads-naive", "python-threadpool-naive", "node-worker-exit-unflushed"]
)
def test_golden_reports(
    scenario: str, jobs: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With --jobs 3 and no size threshold these small dumps are read by three processes: the
    # report must not change.
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    _, out, _ = cli(capsys, "analyze", str(SCENARIOS / scenario / "dump.json"), "-f", "json", "--jobs", jobs)
    got = json.loads(json.dumps(normalise(json.loads(out))))
    path = GOLDEN / f"{scenario}.json"
    if os.environ.get("CTXDOCTOR_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=2) + "\n")
    assert got == json.loads(path.read_text()), "golden report changed; review and rerun with CTXDOCTOR_UPDATE_GOLDEN=1"


def test_gate_fails_when_there_is_nothing_to_judge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("")
    code, out, _ = cli(capsys, "check", str(empty), "--max-orphan-ratio", "0.5")
    assert code == ExitCode.GATE_FAILED and "no spans to judge" in out
    # Without a gate an empty dump is simply an empty report.
    assert cli(capsys, "analyze", str(empty))[0] == ExitCode.OK


def test_a_json_dump_is_analysed_without_importing_protobuf(tmp_path: Path) -> None:
    """protobuf costs start-up time and ~3 MB; only proto dumps and the receiver need it."""
    dump = SCENARIOS / "python-thread-naive" / "dump.json"
    code = (
        "import sys\n"
        "from ctxdoctor.cli import run\n"
        f"code = run(['analyze', {str(dump)!r}, '--format', 'json', '-o', {str(tmp_path / 'r.json')!r}])\n"
        "print(int(code), 'google.protobuf' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "False"]


@pytest.mark.parametrize("scenario", ["python-threadpool-naive-c32", "healthy-server"])
def test_the_json_report_is_written_as_json_dumps_would_write_it(scenario: str) -> None:
    """Streamed in batches to keep memory flat, byte for byte the text of ``json.dumps``."""
    import io

    from rich.console import Console

    from ctxdoctor.diagnose import diagnose
    from ctxdoctor.readers import read_paths
    from ctxdoctor.render.json_report import JsonRenderer, report_dict

    dump = read_paths([SCENARIOS / scenario / "dump.json"])
    # Every suspect, however weak, so that the naive report is long enough to take several batches.
    report = diagnose(dump.spans, Settings(min_confidence=0.0))
    out = io.StringIO()
    JsonRenderer().render(report, Console(file=out))
    expected = json.dumps(report_dict(report), indent=2) + "\n"
    assert out.getvalue() == expected
    if scenario != "healthy-server":
        chunks = sum(1 for _ in json.JSONEncoder(indent=2).iterencode(report_dict(report)))
        assert chunks > 8192  # more than one batch


def test_a_dump_read_without_attribute_values_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the dump were big: read in parallel, without values, unless asked. The ids its spans
    # share were not used, and a user reading the report must know it.
    path = str(SCENARIOS / "python-threadpool-naive" / "dump.json")
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    _, out, _ = cli(capsys, "analyze", path, "-f", "json")
    assert json.loads(out)["settings"]["attribute_values"] is False
    _, out, _ = cli(capsys, "analyze", path)
    assert "attribute values not read" in out and "--attribute-values" in out
    _, out, _ = cli(capsys, "analyze", path, "--attribute-values", "-f", "json")
    assert json.loads(out)["settings"]["attribute_values"] is True
    _, out, _ = cli(capsys, "analyze", path, "--no-attribute-values")
    assert "attribute values not read" not in out  # asked for: nothing to point out
    # A small dump reads them by default.
    monkeypatch.undo()
    _, out, _ = cli(capsys, "analyze", path, "-f", "json")
    assert json.loads(out)["settings"]["attribute_values"] is True
