"""``ctxdoctor convert``: a proto dump to OTLP/JSON lines, exactly as ``listen`` writes them."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ctxdoctor.readers import read_paths
from ctxdoctor.receiver.convert import Converter, convert_file
from ctxdoctor.receiver.sink import journal_record
from tests.helpers import journal_records, make_request, unreadable_record, with_file_size_limit


def _proto_dump(path: Path, seeds: range, n: int = 5) -> set[tuple[int, int]]:
    data, ids = journal_records(seeds, n=n)
    path.write_bytes(data)
    return ids


def _convert(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctxdoctor", "convert", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _ids(path: Path) -> list[tuple[int, int]]:
    return [(s.trace_id, s.span_id) for s in read_paths([path]).spans]


def test_convert_writes_what_listen_writes(tmp_path: Path) -> None:
    ids = _proto_dump(tmp_path / "dump.pb", range(1, 30))
    proc = _convert(tmp_path, "dump.pb")
    assert proc.returncode == 0, proc.stderr
    assert "converted 29 requests (145 spans) from dump.pb to dump.json" in proc.stderr
    assert _ids(tmp_path / "dump.json") == _ids(tmp_path / "dump.pb")
    assert set(_ids(tmp_path / "dump.json")) == ids
    # Byte for byte what the receiver's converter makes of the same journal.
    Converter(tmp_path / "dump.pb", tmp_path / "listen.json", live=False).step(budget=10)
    assert (tmp_path / "dump.json").read_bytes() == (tmp_path / "listen.json").read_bytes()
    # And the same report as the proto dump.
    a = subprocess.run(
        [sys.executable, "-m", "ctxdoctor", "analyze", "-f", "json", "dump.pb"], cwd=tmp_path, capture_output=True
    )
    b = subprocess.run(
        [sys.executable, "-m", "ctxdoctor", "analyze", "-f", "json", "dump.json"], cwd=tmp_path, capture_output=True
    )
    assert a.stdout.replace(b"dump.pb", b"X") == b.stdout.replace(b"dump.json", b"X")


def test_convert_with_worker_processes_is_the_same(tmp_path: Path) -> None:
    _proto_dump(tmp_path / "a.pb", range(1, 60))
    convert_file(tmp_path / "a.pb", tmp_path / "one.json", workers=0)
    done = convert_file(tmp_path / "a.pb", tmp_path / "two.json", workers=2)
    assert (done.requests, done.spans, done.truncated) == (59, 295, None)
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


def test_a_truncated_last_record_is_a_warning(tmp_path: Path) -> None:
    ids = _proto_dump(tmp_path / "dump.pb", range(1, 6))
    whole = (tmp_path / "dump.pb").read_bytes()
    last = journal_record(make_request(6, n=5)[0].SerializeToString())
    (tmp_path / "dump.pb").write_bytes(whole + last[:-10])
    proc = _convert(tmp_path, "dump.pb", "-o", "out.json")
    assert proc.returncode == 0, proc.stderr
    assert f"dump.pb (byte offset {len(whole)}): last record is truncated" in proc.stderr
    assert set(_ids(tmp_path / "out.json")) == ids


def test_an_unreadable_record_is_named_and_the_rest_written(tmp_path: Path) -> None:
    _proto_dump(tmp_path / "a.pb", range(1, 4))
    first = (tmp_path / "a.pb").read_bytes()
    bad = unreadable_record(4)  # a span name that is not UTF-8: upb refuses it
    more = _proto_dump(tmp_path / "b.pb", range(5, 8))
    (tmp_path / "dump.pb").write_bytes(first + bad + (tmp_path / "b.pb").read_bytes())
    proc = _convert(tmp_path, "dump.pb")
    assert proc.returncode == 3
    assert f"dump.pb (byte offset {len(first)}): record is not a valid ExportTraceServiceRequest" in proc.stderr
    assert "6 readable requests written to dump.json" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert more <= set(_ids(tmp_path / "dump.json"))
    assert len(_ids(tmp_path / "dump.json")) == 6 * 5


@pytest.mark.parametrize(
    ("name", "content", "args", "code", "message"),
    [
        ("missing.pb", None, (), 3, "missing.pb: no such file"),
        ("dump.json", b'{"resourceSpans":[]}\n', ("-o", "x.json"), 3, "it is already OTLP/JSON"),
        ("dump.pb", gzip.compress(b"\x00\x00\x00\x00"), (), 3, "gzip-compressed"),
        ("dump.pb", b"\xff\xff\xff\xffjunk", (), 3, "first length prefix is not plausible"),
        ("dump.bin", b"", (), 2, "name the JSON file to write with --output"),
        ("dump.pb", b"", ("-o", "dump.pb"), 2, "is the source itself"),
    ],
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path, name: str, content: bytes | None, args: tuple[str, ...], code: int, message: str
) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    proc = _convert(tmp_path, name, *args)
    assert proc.returncode == code, proc.stderr
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_empty_dump_converts_to_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "dump.pb").write_bytes(b"")
    proc = _convert(tmp_path, "dump.pb")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "dump.json").read_bytes() == b""
    assert "converted 0 requests (0 spans)" in proc.stderr


def test_an_unwritable_output_is_one_clear_line(tmp_path: Path) -> None:
    _proto_dump(tmp_path / "dump.pb", range(1, 4))
    proc = _convert(tmp_path, "dump.pb", "-o", str(tmp_path / "no-such-dir" / "out.json"))
    assert proc.returncode == 2, proc.stderr
    assert "cannot open" in proc.stderr and "No such file or directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_full_disk_midway_keeps_whole_lines(tmp_path: Path) -> None:
    """The file size limit stands in for a full disk: the lines before the one that did not fit
    stay, whole, and the command says how many requests were written."""
    _proto_dump(tmp_path / "dump.pb", range(1, 40), n=20)
    proc = subprocess.run(
        with_file_size_limit([sys.executable, "-m", "ctxdoctor", "convert", "dump.pb"], 32 * 1024),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "file size limit reached" in proc.stderr and "Traceback" not in proc.stderr
    m = re.search(r"the first (\d+) requests were written", proc.stderr)
    assert m and 0 < int(m.group(1)) < 39, proc.stderr
    dump = read_paths([tmp_path / "dump.json"])
    assert not dump.warnings  # whole lines only
    assert len(dump.spans) == int(m.group(1)) * 20
