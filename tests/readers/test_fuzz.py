"""Both decoders against mutated real dumps: a seeded mutator (bit flips, cut, repeated and
inserted bytes, structural characters) over recorded fixture dumps, in OTLP/JSON and in the
Collector's proto format. Every mutant is read as a dump or refused with ``InputError`` (exit 3),
and every request body is accepted or refused with ``BadRequest`` (400 / INVALID_ARGUMENT):
never another exception, never another exit code. The budget is a few seconds per format; a
failure names the seed that reproduces it."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ctxdoctor.cli import run
from ctxdoctor.errors import InputError
from ctxdoctor.exitcodes import ExitCode
from ctxdoctor.readers import read_paths
from ctxdoctor.receiver.decode import BadRequest, parse_json, parse_protobuf
from ctxdoctor.receiver.encode import TranscodeError, Transcoder, screen_request
from tests.scenarios import SCENARIOS

BUDGET_S = 2.5
MAX_CASES = 400
SOURCES = [SCENARIOS / "node-worker-threads-naive" / "dump.json", SCENARIOS / "python-threadpool-naive" / "dump.json"]
_JSON_BYTES = b'{}[]":,0123456789-eE.\\ \n'


def proto_twin(dump: Path) -> bytes:
    """The same dump in the Collector's proto format (4-byte length + request per record)."""
    out = bytearray()
    for line in dump.read_bytes().splitlines():
        if line.strip():
            body = parse_json(line)[0].SerializeToString()
            out += len(body).to_bytes(4, "big") + body
    return bytes(out)


def mutate(data: bytes, rnd: random.Random, structural: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if not b:
            break
        i = rnd.randrange(len(b))
        op = rnd.randrange(7)
        if op == 0:
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1:
            b[i] = rnd.randrange(256)
        elif op == 2:
            del b[i : i + rnd.randint(1, 64)]
        elif op == 3:
            j = min(len(b), i + rnd.randint(1, 256))
            b[i:i] = b[i:j]  # a repeated run
        elif op == 4:
            b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        elif op == 5:
            b[i] = rnd.choice(structural)
        else:
            del b[rnd.randrange(len(b)) :]  # cut short
    return bytes(b)


def fuzz(seeded: Callable[[int], None]) -> int:
    deadline = time.monotonic() + BUDGET_S
    n = 0
    while n < MAX_CASES and (n < 20 or time.monotonic() < deadline):
        try:
            seeded(n)
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"seed {n}: {type(exc).__name__}: {exc}") from exc
        n += 1
    return n


@pytest.mark.parametrize("fmt", ["json", "proto"])
def test_readers_refuse_or_read_every_mutant(tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    originals = [s.read_bytes() if fmt == "json" else proto_twin(s) for s in SOURCES]
    structural = _JSON_BYTES if fmt == "json" else bytes([0, 0x0A, 0x12, 0x1A, 0x80, 0xFF])
    outcomes = {"read": 0, "refused": 0}

    def case(seed: int) -> None:
        rnd = random.Random(seed)
        data = mutate(rnd.choice(originals), rnd, structural)
        path = tmp_path / f"mutant-{seed}.{fmt}"
        path.write_bytes(data)
        try:
            read_paths([path])
            expected = ExitCode.OK
            outcomes["read"] += 1
        except InputError as exc:
            assert str(exc).startswith(str(path)), exc
            expected = ExitCode.BAD_INPUT
            outcomes["refused"] += 1
        if seed % 8 == 0:  # the command itself, now and then: the same verdict as its exit code
            code = run(["analyze", str(path)])
            err = capsys.readouterr().err
            assert code == expected, (seed, err)
            assert "Traceback" not in err
        path.unlink()

    cases = fuzz(case)
    assert cases >= 20
    assert outcomes["refused"] > 0  # the mutator does break dumps


@pytest.mark.parametrize("fmt", ["json", "proto"])
def test_receiver_decoders_accept_or_refuse_every_mutant(fmt: str) -> None:
    bodies = [line for s in SOURCES for line in s.read_bytes().splitlines() if line.strip()]
    if fmt == "proto":
        bodies = [parse_json(b)[0].SerializeToString() for b in bodies]
    structural = _JSON_BYTES if fmt == "json" else bytes([0, 0x0A, 0x12, 0x1A, 0x80, 0xFF])
    transcoder = Transcoder()

    def case(seed: int) -> None:
        rnd = random.Random(seed)
        body = mutate(rnd.choice(bodies), rnd, structural)
        try:
            req = parse_protobuf(body) if fmt == "proto" else parse_json(body)[0]
        except BadRequest as exc:
            assert str(exc)
            return
        raw = req.SerializeToString()
        screen_request(req, raw)
        try:
            transcoder.transcode(req.SerializeToString())
        except TranscodeError:
            raise AssertionError(f"seed {seed}: a request the receiver accepted does not transcode") from None

    assert fuzz(case) >= 20
