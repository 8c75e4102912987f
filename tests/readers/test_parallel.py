"""Reading with several processes gives exactly what reading alone gives: the same spans in the
same order, the same units (interned, one object each), and errors and warnings at the same
file positions. Inputs are real SDK dumps from fixtures/scenarios, in both file formats; the
size threshold is lowered so that these small files are cut too."""

from __future__ import annotations

import gzip
import itertools
import os
import random
import struct
from pathlib import Path

import pytest

from ctxdoctor.errors import InputError
from ctxdoctor.readers import READERS, Dump, _splittable, parallel, read_paths
from ctxdoctor.receiver.decode import parse_json
from tests.helpers import SCENARIOS, mutate

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="parallel reading needs os.fork")

REAL = SCENARIOS / "node-worker-threads-naive-c32" / "dump.json"  # 68 lines


@pytest.fixture(autouse=True)
def split_small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)


def to_proto_file(json_path: Path, out: Path) -> Path:
    records = []
    for line in json_path.read_bytes().splitlines():
        req, _, _ = parse_json(line)
        body = req.SerializeToString()
        records.append(struct.pack(">I", len(body)) + body)
    out.write_bytes(b"".join(records))
    return out


def outcome(paths: list[Path], jobs: int) -> Dump | str:
    try:
        return read_paths(paths, jobs=jobs)
    except InputError as exc:
        return f"InputError: {exc}"


def assert_same(paths: list[Path], jobs: int) -> Dump | str:
    alone, shared = outcome(paths, 1), outcome(paths, jobs)
    if isinstance(alone, str) or isinstance(shared, str):
        assert shared == alone
        return alone
    assert shared.spans == alone.spans
    assert shared.warnings == alone.warnings
    # Interned as reading alone interns: one unit object per distinct unit.
    assert len({id(s.unit) for s in shared.spans}) == len({s.unit for s in alone.spans})
    return alone


def test_the_real_dump_is_cut_into_several_pieces(tmp_path: Path) -> None:
    runs = parallel.plan([REAL], 3, READERS, _splittable)
    assert len(runs) == 3
    pieces = [p for run in runs for p in run]
    assert pieces[0].start == 0 and pieces[-1].end is None
    for a, b in itertools.pairwise(pieces):
        assert a.end == b.start
    data = REAL.read_bytes()
    assert all(data[p.start - 1 : p.start] == b"\n" for p in pieces[1:])  # at line starts


@pytest.mark.parametrize("jobs", [2, 3, 5])
@pytest.mark.parametrize(
    "scenario", ["python-mixed-c32", "python-exit-unflushed", "node-worker-exit-unflushed", "healthy-server"]
)
def test_json_lines_read_alike(scenario: str, jobs: int) -> None:
    path = SCENARIOS / scenario / "dump.json"
    assert len(parallel.plan([path], jobs, READERS, _splittable)) > 1
    dump = assert_same([path], jobs)
    assert isinstance(dump, Dump) and len(dump.spans) > 50


@pytest.mark.parametrize("jobs", [2, 3])
def test_proto_reads_alike(tmp_path: Path, jobs: int) -> None:
    pb = to_proto_file(REAL, tmp_path / "dump.pb")
    assert len(parallel.plan([pb], jobs, READERS, _splittable)) == jobs
    dump = assert_same([pb], jobs)
    assert isinstance(dump, Dump) and len(dump.spans) > 100


def test_many_files_gzip_and_empty_read_alike(tmp_path: Path) -> None:
    files = []
    for i, scenario in enumerate(["python-threadpool-naive-c32", "healthy-server", "node-fork-naive"]):
        data = (SCENARIOS / scenario / "dump.json").read_bytes()
        if i == 1:  # a gzip file is never cut: it goes whole to one process
            p = tmp_path / f"{i}.json.gz"
            p.write_bytes(gzip.compress(data))
        else:
            p = tmp_path / f"{i}.json"
            p.write_bytes(data)
        files.append(p)
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    files.insert(2, empty)
    files.append(to_proto_file(SCENARIOS / "node-piscina-naive" / "dump.json", tmp_path / "p.pb"))
    gz = [p for run in parallel.plan(files, 4, READERS, _splittable) for p in run if p.path.endswith(".gz")]
    assert len(gz) == 1 and gz[0].whole
    for jobs in (2, 4):
        dump = assert_same(files, jobs)
        assert isinstance(dump, Dump) and any("empty" in str(w) for w in dump.warnings)


@pytest.mark.parametrize("seed", range(3))
def test_a_mangled_line_anywhere_is_reported_at_the_same_line(tmp_path: Path, seed: int) -> None:
    """Seeded mutations of one line of a real dump, at every position: the error (file, line,
    message) or the warnings are those of reading alone, whichever process met the line."""
    lines = REAL.read_bytes().splitlines(keepends=True)
    rnd = random.Random(seed)
    errors = 0
    for n in range(12):
        at = rnd.randrange(len(lines))
        mangled = [*lines]
        mangled[at] = mutate(lines[at].rstrip(b"\n"), rnd) + b"\n"
        p = tmp_path / f"m{n}.json"
        p.write_bytes(b"".join(mangled))
        got = assert_same([p], 3)
        errors += isinstance(got, str)
    assert errors > 0  # the mutations did reach the error paths


def test_truncated_last_line_is_a_warning_and_a_cut_line_mid_file_an_error(tmp_path: Path) -> None:
    lines = REAL.read_bytes().splitlines(keepends=True)
    tail = tmp_path / "tail.json"
    tail.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    dump = assert_same([tail], 3)
    assert isinstance(dump, Dump) and "truncated" in str(dump.warnings[-1])
    assert dump.warnings[-1].line == len(lines)
    # The same cut line in the middle, where the last line of a piece may fall: an error.
    for at in range(1, len(lines) - 1):
        mid = tmp_path / f"mid{at}.json"
        mid.write_bytes(b"".join(lines[:at]) + lines[at][: len(lines[at]) // 2] + b"\n" + b"".join(lines[at + 1 :]))
        got = assert_same([mid], 3)
        assert isinstance(got, str) and f"mid{at}.json:{at + 1}:" in got


def test_a_bad_proto_record_in_a_later_piece_is_reported_at_its_file_offset(tmp_path: Path) -> None:
    pb = to_proto_file(REAL, tmp_path / "dump.pb")
    data = bytearray(pb.read_bytes())
    last = parallel.plan([pb], 3, READERS, _splittable)[-1][0]
    data[last.start + 4 : last.start + 12] = b"\xff" * 8  # the last piece's first record
    pb.write_bytes(bytes(data))
    got = assert_same([pb], 3)
    assert isinstance(got, str) and f"(byte offset {last.start})" in got


def test_a_reader_process_that_dies_is_read_again_here(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_args: object) -> None:
        os._exit(9)

    monkeypatch.setattr(parallel, "_read_share", crash)
    assert_same([REAL], 3)


def test_progress_covers_every_process_and_ends_at_the_total() -> None:
    seen: list[tuple[int, int]] = []
    read_paths([REAL], jobs=3, progress=lambda done, total: seen.append((done, total)))
    size = REAL.stat().st_size
    assert seen and all(t == size for _, t in seen)
    assert seen[-1][0] == size
    assert all(0 <= d <= size for d, _ in seen)


def test_small_inputs_and_one_cpu_stay_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", REAL.stat().st_size + 1)

    def no_fork() -> int:
        raise AssertionError("forked for a small input")

    monkeypatch.setattr(os, "fork", no_fork)
    assert len(read_paths([REAL], jobs=4).spans) > 100


def test_no_process_to_be_had_means_reading_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """fork() failing (EAGAIN: out of processes, ENOMEM) is no input error: the rest is read here."""
    forks = []

    def fork_fails_after_one() -> int:
        forks.append(1)
        if len(forks) > 1:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real_fork()

    real_fork = os.fork
    monkeypatch.setattr(os, "fork", fork_fails_after_one)
    assert_same([REAL], 4)
    assert len(forks) == 2  # one reader started, the second fork failed, no third was tried
