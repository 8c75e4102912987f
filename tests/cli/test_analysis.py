"""The pipeline (``ctxdoctor.analysis``): the final analysis of ``listen``/``run`` in a fresh
process gives the same report as in-process, the same input errors, and the in-process analysis
whenever the fresh process gives no answer."""

from __future__ import annotations

import gzip
from pathlib import Path

import msgspec
import pytest
from rich.console import Console

from ctxdoctor import analysis
from ctxdoctor.errors import InputError
from ctxdoctor.findings import Allow, Settings
from ctxdoctor.readers import read_paths
from ctxdoctor.receiver import command
from ctxdoctor.receiver.receiver import Receiver
from tests.helpers import SCENARIOS, grpc_call, make_request


def _in_process(path: Path, settings: Settings) -> object:
    return analysis.analyze_dump(read_paths([path]), settings)


@pytest.mark.parametrize("scenario", ["python-threadpool-naive-c32", "node-worker-threads-naive", "healthy-server"])
@pytest.mark.parametrize("jobs", [1, 3])
def test_the_same_report_as_in_process(scenario: str, jobs: int) -> None:
    path = SCENARIOS / scenario / "dump.json"
    settings = Settings(min_confidence=0.3, max_orphan_ratio=0.1, allow=(Allow(name="nightly*"),))
    report = analysis._analyze_in_fresh_process(path, settings, jobs)
    assert report is not None
    assert report == _in_process(path, settings)
    # The settings went over as given, with what the size rule decided for attribute values
    # (a small dump: read).
    assert report.settings == msgspec.structs.replace(settings, attribute_values=True)


def test_an_unreadable_dump_is_the_same_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    lines = (SCENARIOS / "python-thread-naive" / "dump.json").read_bytes().splitlines(keepends=True)
    bad.write_bytes(b"".join(lines[:2]) + b'{"resourceSpans": [{"scopeSpans": 7}]}\n' + b"".join(lines[2:]))
    with pytest.raises(InputError) as here:
        read_paths([bad])
    with pytest.raises(InputError) as there:
        analysis._analyze_in_fresh_process(bad, Settings(), 2)
    assert (there.value.path, there.value.line, there.value.message) == (
        here.value.path,
        here.value.line,
        here.value.message,
    )
    assert there.value.line == len(lines[:2]) + 1


def test_no_answer_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = SCENARIOS / "python-thread-naive" / "dump.json"
    monkeypatch.setattr(analysis.sys, "executable", "/bin/false")  # a process that dies at once
    assert analysis._analyze_in_fresh_process(path, Settings(), 2) is None
    monkeypatch.setattr(analysis.sys, "executable", str(tmp_path / "no-such-python"))
    assert analysis._analyze_in_fresh_process(path, Settings(), 2) is None


def test_only_dumps_worth_a_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = tmp_path / "small.json"
    small.write_bytes(b"{}\n")
    assert not analysis._worth_a_fresh_process(small)
    assert not analysis._worth_a_fresh_process(tmp_path / "missing.json")
    monkeypatch.setattr(analysis, "PARALLEL_MIN_BYTES", 2)
    assert analysis._worth_a_fresh_process(small) == (analysis.usable_cpus() > 1)
    big = tmp_path / "big.json.gz"
    big.write_bytes(gzip.compress(b"{}\n"))
    assert analysis._worth_a_fresh_process(big) == (analysis.usable_cpus() > 1)


@pytest.mark.parametrize("answers", [True, False])
def test_listen_reports_from_the_fresh_process_or_else_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers: bool
) -> None:
    out = tmp_path / "dump.pb"
    with Receiver(out, grpc_port=0, http_port=0, dump_format="proto") as rcv:
        for seed in range(1, 4):
            grpc_call(rcv, make_request(seed, n=4)[0].SerializeToString())
    used: list[Path] = []
    real = analysis._analyze_in_fresh_process

    def spy(path: Path, settings: Settings, jobs: int) -> object:
        used.append(path)
        return real(path, settings, jobs) if answers else None

    monkeypatch.setattr(analysis, "_worth_a_fresh_process", lambda path: True)
    monkeypatch.setattr(analysis, "_analyze_in_fresh_process", spy)
    console = Console(record=True, width=200)
    report_to = command._ReportTo(Settings(), 2, None, None)
    assert command._finish(rcv, out, "test", console, report_to) == 0
    assert used == [out]
    text = console.export_text()
    assert "12 spans in 3 traces" in text  # the report, whichever process made it


def test_the_library_call_is_the_pipeline() -> None:
    """``from ctxdoctor import Settings, analyze_paths``, as the README shows it."""
    import ctxdoctor
    from ctxdoctor import Settings as PublicSettings
    from ctxdoctor import analyze_paths

    path = SCENARIOS / "node-worker-threads-naive" / "dump.json"
    report = analyze_paths([path], PublicSettings(max_orphan_ratio=0.05))
    assert analyze_paths is analysis.analyze_paths and PublicSettings is Settings
    assert report == _in_process(path, Settings(max_orphan_ratio=0.05))
    assert report.gaps and report.gate_failed
    assert set(ctxdoctor.__all__) >= {"analyze_paths", "Settings", "Report"}
    with pytest.raises(AttributeError):
        ctxdoctor.no_such_name  # noqa: B018
