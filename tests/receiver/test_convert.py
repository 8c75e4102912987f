"""The journal -> dump converter, and the live view it feeds."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from ctxdoctor.analysis import analyze_paths
from ctxdoctor.findings import Allow, Settings
from ctxdoctor.readers import read_paths
from ctxdoctor.receiver import convert
from ctxdoctor.receiver.convert import OBSERVE_AHEAD_BYTES, Converter, Progress, TraceCounter, idle_cores
from ctxdoctor.receiver.decode import parse_json
from ctxdoctor.receiver.sink import DumpWriteError, journal_record
from tests.helpers import ROOT, journal_records, make_request, unreadable_record


def test_converter_waits_for_a_record_still_being_written(tmp_path: Path) -> None:
    journal, dump = tmp_path / "j", tmp_path / "dump.json"
    whole, ids = journal_records(range(1, 4))
    last = journal_record(make_request(4, n=5)[0].SerializeToString())
    journal.write_bytes(whole + last[:-7])  # the last record is not complete yet
    conv = Converter(journal, dump, live=False)
    assert conv.step()
    assert conv.progress.offset == len(whole) and conv.progress.requests == 3
    assert not conv.step()  # nothing new that is complete
    with journal.open("ab") as f:
        f.write(last[-7:])
    assert conv.step()
    conv.close()
    got = {(s.trace_id, s.span_id) for s in read_paths([dump]).spans}
    assert got == ids | make_request(4, n=5)[1]
    assert conv.progress.spans == 20


def test_an_unreadable_record_is_skipped_with_an_error_and_the_rest_converted(tmp_path: Path) -> None:
    """The journal holds only requests upb parsed at ingest; should a record still be unreadable
    (here: a span name that is not UTF-8, which upb refuses), the converter says so and goes on."""
    journal, dump = tmp_path / "j", tmp_path / "dump.json"
    first, ids = journal_records(range(1, 3))
    bad = unreadable_record(3)
    last, more = journal_records(range(4, 6))
    journal.write_bytes(first + bad + last)
    conv = Converter(journal, dump, live=False)
    assert conv.step()
    conv.close()
    assert conv.progress.offset == len(first + bad + last)
    assert conv.progress.error == f"journal record at offset {len(first)} is unreadable; skipped"
    assert (conv.progress.requests, conv.progress.spans) == (4, 20)
    assert {(s.trace_id, s.span_id) for s in read_paths([dump]).spans} == ids | more


def test_converter_counts_the_traces_it_converts(tmp_path: Path) -> None:
    journal, dump = tmp_path / "j", tmp_path / "dump.json"
    data, ids = journal_records(range(1, 8))
    journal.write_bytes(data)
    conv = Converter(journal, dump, live=False)
    conv.step()
    conv.close()
    assert conv.progress.traces == len({t for t, _ in ids}) == 7
    assert conv.progress.spans == len(ids)


def _convert_all(journal: Path, dump: Path, **kw: int) -> Converter:
    conv = Converter(journal, dump, live=False, **kw)
    size = journal.stat().st_size
    while conv.step(limit=size):
        pass
    conv.close()
    return conv


def test_worker_processes_write_the_same_dump_in_the_same_order(tmp_path: Path) -> None:
    """A backlog converted by worker processes, chunk by chunk, as this process would convert it."""
    journal = tmp_path / "j"
    data, ids = journal_records(range(1, 40))
    bad_at = len(data)
    data += unreadable_record(40)
    more, more_ids = journal_records(range(41, 80))
    journal.write_bytes(data + more)
    one = _convert_all(journal, tmp_path / "one.json")
    # A record per chunk, so that several are in flight at once.
    parallel = _convert_all(
        journal, tmp_path / "par.json", workers=2, parallel_backlog=1, chunk_bytes=1, min_idle_cores=0
    )
    assert (tmp_path / "par.json").read_bytes() == (tmp_path / "one.json").read_bytes()
    assert parallel.progress == one.progress
    assert one.progress.error == f"journal record at offset {bad_at} is unreadable; skipped"
    assert one.progress.spans == len(ids | more_ids) == 78 * 5
    assert [(s.trace_id, s.span_id) for s in read_paths([tmp_path / "par.json"]).spans] == sorted(ids | more_ids)


def test_a_worker_that_dies_costs_time_not_spans(tmp_path: Path) -> None:
    journal, dump = tmp_path / "j", tmp_path / "dump.json"
    data, ids = journal_records(range(1, 60))
    journal.write_bytes(data)
    conv = Converter(journal, dump, live=False, workers=2, parallel_backlog=1, chunk_bytes=1, min_idle_cores=0)
    assert conv.step(limit=len(data), budget=0)  # the first record is written, others are in flight
    assert conv._pool is not None and conv.progress.requests == 1
    for proc in list(conv._pool._processes.values()):  # type: ignore[attr-defined]
        proc.kill()
    while conv.step(limit=len(data)):
        pass
    conv.close()
    assert conv._workers == 0  # it went on without them
    assert conv.progress.offset == len(data) and conv.progress.spans == len(ids)
    assert [(s.trace_id, s.span_id) for s in read_paths([dump]).spans] == sorted(ids)


_KILLED_CONVERTER = """
import sys, time
from pathlib import Path
from ctxdoctor.receiver.convert import Converter

if __name__ == "__main__":
    journal = Path(sys.argv[1])
    parallel = dict(workers=2, parallel_backlog=1, chunk_bytes=1, min_idle_cores=0)
    conv = Converter(journal, Path(sys.argv[2]), live=False, **parallel)
    conv.step(limit=journal.stat().st_size, budget=0)
    print(*(p.pid for p in conv._pool._processes.values()), flush=True)
    time.sleep(60)
"""


def test_worker_processes_do_not_outlive_a_killed_converter(tmp_path: Path) -> None:
    """The receiver kills a converter that is stuck; its workers must go with it."""
    journal = tmp_path / "j"
    journal.write_bytes(journal_records(range(1, 40))[0])
    script = tmp_path / "killed_converter.py"
    script.write_text(_KILLED_CONVERTER)
    root = ROOT
    proc = subprocess.Popen(
        [sys.executable, str(script), str(journal), str(tmp_path / "dump.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdout is not None
    workers = [int(pid) for pid in proc.stdout.readline().split()]
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def test_no_workers_when_the_cores_are_busy(tmp_path: Path) -> None:
    """Workers on cores that others keep busy only add copying: this process converts alone."""
    journal = tmp_path / "j"
    data, ids = journal_records(range(1, 20))
    journal.write_bytes(data)
    conv = _convert_all(journal, tmp_path / "dump.json", workers=2, parallel_backlog=1, min_idle_cores=1000)
    assert not conv.used_workers and conv.progress.spans == len(ids)


def test_idle_cores_are_measured() -> None:
    idle = idle_cores(0.05)
    assert idle is not None and 0 <= idle <= (os.cpu_count() or 1) + 0.5


def test_converter_process_finishes_the_journal_when_its_parent_is_gone(tmp_path: Path) -> None:
    journal, dump = tmp_path / "j", tmp_path / "dump.json"
    data, ids = journal_records(range(1, 30))
    journal.write_bytes(data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctxdoctor.receiver.convert_main", str(journal), str(dump)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    out, _ = proc.communicate(b"", timeout=60)  # stdin closes at once: as if the receiver died
    assert proc.returncode == 0
    last = msgspec.json.decode(out.splitlines()[-1], type=Progress)
    assert last.done and last.offset == len(data) and last.spans == len(ids)
    assert {(s.trace_id, s.span_id) for s in read_paths([dump]).spans} == ids


def test_converter_process_exits_once_it_reached_the_end_it_is_given(tmp_path: Path) -> None:
    """The receiver sends ``end <journal size>`` after its last append and waits for ``done``."""
    journal, dump = tmp_path / "j", tmp_path / "dump.json"
    data, ids = journal_records(range(1, 20))
    journal.write_bytes(data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctxdoctor.receiver.convert_main", str(journal), str(dump), "--no-live"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(f"end {len(data)}\n".encode())
    proc.stdin.flush()
    # The receiver keeps stdin open while it waits; the converter must not need EOF to finish.
    last = None
    assert proc.stdout is not None
    for line in proc.stdout:
        last = msgspec.json.decode(line, type=Progress)
        if last.done:
            break
    proc.stdin.close()
    assert proc.wait(60) == 0
    assert last is not None and last.done and last.offset == len(data)
    assert {(s.trace_id, s.span_id) for s in read_paths([dump]).spans} == ids


def test_trace_counter_is_exact_then_close() -> None:
    tc = TraceCounter()
    for i in range(1000):
        tc.add([i.to_bytes(16, "big")] * 2)
    assert (tc.count(), tc.estimated) == (1000, False)
    rng = random.Random(1)
    big = TraceCounter()
    n = 300_000
    for _ in range(n // 300):
        big.add([rng.randbytes(16) for _ in range(300)])
    assert big.estimated
    assert abs(big.count() - n) / n < 0.03
    seq = TraceCounter()  # sequential ids (some generators) must not fool the estimate
    for i in range(n):
        seq.add([(i + 1).to_bytes(16, "big")])
    assert abs(seq.count() - n) / n < 0.03


def test_live_figures_run_ahead_of_a_dump_that_is_behind(tmp_path: Path) -> None:
    """The dump cannot be written (a full disk): nothing is converted, yet the live view counts
    every span and trace that arrived, because records are read ahead of the conversion."""
    journal = tmp_path / "j"
    data, _ = journal_records(range(1, 41), pad=21_000)
    assert len(data) >= OBSERVE_AHEAD_BYTES
    journal.write_bytes(data)
    conv = Converter(journal, Path("/dev/full"), append=True, live=True)
    with pytest.raises(DumpWriteError):
        conv.step(budget=10)
    assert (conv.progress.offset, conv.progress.spans) == (0, 0)  # nothing converted
    assert (conv.progress.observed_spans, conv.progress.traces) == (200, 40)
    assert conv.observed == len(data)
    conv.maybe_diagnose(force=True)
    assert conv.progress.orphans_spans == 200  # the live diagnosis covers them too
    conv.close()


def test_records_read_ahead_are_not_counted_again_when_converted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "j"
    data, _ = journal_records(range(1, 41), pad=21_000)
    journal.write_bytes(data)
    read_ahead: list[int] = []
    real = convert._trace_ids

    def spy(body: bytes) -> list[bytes] | None:
        read_ahead.append(len(body))
        return real(body)

    monkeypatch.setattr(convert, "_trace_ids", spy)
    ahead = Converter(journal, tmp_path / "a.json", live=True)
    while ahead.step():
        pass
    ahead.close()
    assert len(read_ahead) == 40  # every record was read ahead of its conversion
    plain = _convert_all(journal, tmp_path / "b.json")  # live=False: never reads ahead
    p, q = ahead.progress, plain.progress
    assert (p.offset, p.requests, p.spans, p.traces) == (q.offset, q.requests, q.spans, q.traces)
    assert (p.offset, p.requests, p.spans, p.traces) == (len(data), 40, 200, 40)
    assert p.observed_spans == 200  # once each
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_the_live_count_is_the_pipelines_with_the_listen_settings(tmp_path: Path) -> None:
    """The live view's "suspected orphans" is the pipeline's figure for the spans it covers, under
    the settings ``listen`` was given: allowing every root leaves none."""
    recorded = ROOT / "fixtures" / "scenarios" / "node-worker-threads-naive" / "dump.json"
    journal = tmp_path / "j"
    journal.write_bytes(
        b"".join(journal_record(parse_json(line)[0].SerializeToString()) for line in recorded.read_bytes().splitlines())
    )
    expected = analyze_paths([recorded]).summary.suspected_orphans
    assert expected > 0
    for settings, want in ((None, expected), (Settings(allow=(Allow(name="*"),)), 0)):
        conv = Converter(journal, tmp_path / f"d{want}.json", live=True, settings=settings)
        while conv.step():
            pass
        conv.maybe_diagnose(force=True)
        assert conv.progress.orphans == want
        conv.close()
