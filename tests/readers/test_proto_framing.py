"""The Collector's proto format is a 4-byte length and then an ``ExportTraceServiceRequest``; four
bytes alone are not enough to call a file a trace dump. A file that is something else is refused as
"not a trace dump" (file, offset, exit 3), never read as an empty, healthy dump; real proto dumps
(``listen -o dump.pb``, tests/receiver/test_proto_dump.py) still read."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ctxdoctor.errors import InputError
from ctxdoctor.exitcodes import ExitCode
from ctxdoctor.readers import read_paths
from tests.helpers import ROOT, request_json, span_json, to_proto

_REQ = request_json([span_json(0xA1, 0x1, "root", 0, 5), span_json(0xA1, 0x2, "child", 1, 2, parent=0x1)])


def _refused(path: Path) -> InputError:
    with pytest.raises(InputError) as exc:
        read_paths([path])
    assert str(path) in str(exc.value) and "not a trace dump" in exc.value.message
    assert exc.value.offset == 0
    return exc.value


def test_a_python_module_is_not_an_empty_proto_dump(tmp_path: Path) -> None:
    # '"""T' reads as a length of 572 MB, under the largest record; the file is far shorter.
    p = tmp_path / "cli.py"
    p.write_bytes((ROOT / "ctxdoctor" / "cli.py").read_bytes())
    assert p.read_bytes()[:3] == b'"""'
    _refused(p)
    proc = subprocess.run(
        [sys.executable, "-m", "ctxdoctor", "analyze", str(p), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "not a trace dump" in proc.stderr and "cli.py" in proc.stderr and "offset 0" in proc.stderr


@pytest.mark.parametrize("seed", range(6))
def test_binary_data_behind_a_plausible_length_is_not_a_dump(tmp_path: Path, seed: int) -> None:
    # Hand-made: random bytes whose first four make a length that fits in the file.
    rnd = random.Random(seed)
    body = rnd.randbytes(rnd.randrange(64, 4096))
    p = tmp_path / "blob.bin"
    p.write_bytes(struct.pack(">I", len(body) - rnd.randrange(0, 32)) + body)
    _refused(p)


@pytest.mark.parametrize("seed", range(6))
def test_a_record_that_starts_like_a_request_but_is_not_one_is_not_a_dump(tmp_path: Path, seed: int) -> None:
    # Hand-made: the first bytes pass for resource_spans (tag 0x0A, a length that fits), the rest
    # is random; the first record must decode as a whole.
    rnd = random.Random(seed)
    inner = rnd.randbytes(rnd.randrange(40, 120))
    body = b"\x0a" + bytes([len(inner)]) + b"\x0a" + inner[1:]
    p = tmp_path / "looks.bin"
    p.write_bytes(struct.pack(">I", len(body)) + body + rnd.randbytes(64))
    _refused(p)


def test_a_first_record_cut_short_is_not_an_empty_dump(tmp_path: Path) -> None:
    body = to_proto(_REQ).SerializeToString()
    p = tmp_path / "cut.pb"
    p.write_bytes(struct.pack(">I", len(body)) + body[: len(body) // 2])
    err = _refused(p)
    assert f"{len(body)} bytes" in err.message


def test_zstd_records_still_get_their_own_advice(tmp_path: Path) -> None:
    p = tmp_path / "z.pb"
    frame = b"\x28\xb5\x2f\xfd" + bytes(40)
    p.write_bytes(struct.pack(">I", len(frame)) + frame)
    with pytest.raises(InputError, match="zstd"):
        read_paths([p])


def test_a_real_request_record_reads(tmp_path: Path) -> None:
    body = to_proto(_REQ).SerializeToString()
    p = tmp_path / "ok.pb"
    p.write_bytes((struct.pack(">I", len(body)) + body) * 2)
    dump = read_paths([p])
    assert len(dump.spans) == 4 and not dump.warnings
