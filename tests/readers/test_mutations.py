"""Mangled input never escapes as a traceback: every mutation of a real dump either reads or
fails with an ``InputError`` naming the file (exit code 3). Seeded, so a failure reproduces."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from ctxdoctor.diagnose import diagnose
from ctxdoctor.errors import InputError
from ctxdoctor.readers import read_paths
from ctxdoctor.receiver.decode import parse_json
from tests.helpers import SCENARIOS, mutate

REAL = (SCENARIOS / "node-worker-threads-naive" / "dump.json").read_bytes().splitlines()[0]


@pytest.mark.parametrize("seed", range(4))
def test_mutated_json_lines_read_or_fail_cleanly(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    outcomes = {"read": 0, "error": 0}
    for n in range(150):
        p = tmp_path / f"m{n}.json"
        p.write_bytes(REAL + b"\n" + mutate(REAL, rnd) + b"\n" + REAL + b"\n")
        try:
            dump = read_paths([p])
        except InputError as exc:
            assert str(p) in str(exc)
            outcomes["error"] += 1
            continue
        diagnose(dump.spans)  # whatever was read can be diagnosed
        outcomes["read"] += 1
    assert outcomes["error"] > 0  # the mutations do break things: the test exercises the error path


def test_mutated_proto_records_read_or_fail_cleanly(tmp_path: Path) -> None:
    req, rejected, _ = parse_json(REAL)  # the receiver's OTLP/JSON parser: hex ids, all value types
    assert rejected == 0
    body = req.SerializeToString()
    record = struct.pack(">I", len(body)) + body
    rnd = random.Random(99)
    for n in range(150):
        p = tmp_path / f"m{n}.pb"
        p.write_bytes(record + mutate(record, rnd) + record)
        try:
            dump = read_paths([p])
        except InputError as exc:
            assert str(p) in str(exc)
            continue
        diagnose(dump.spans)
