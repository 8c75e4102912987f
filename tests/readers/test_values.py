"""Span attribute values (``Span.values``): what the readers keep, in both OTLP formats, and when."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from ctxdoctor.readers import parallel, read_paths
from ctxdoctor.readers.interface import MAX_VALUE_CHARS
from tests.helpers import line, request_json, span_json, to_proto

ATTRS = [
    {"key": "job.id", "value": {"stringValue": "j-42"}},
    {"key": "app.seq", "value": {"intValue": "1234"}},
    {"key": "retry", "value": {"boolValue": True}},
    {"key": "ratio", "value": {"doubleValue": 0.5}},
    {"key": "db.statement", "value": {"stringValue": "x" * (MAX_VALUE_CHARS + 1)}},
    {"key": "empty", "value": {"stringValue": ""}},
    {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}},
]
WANT = ("job.id", "j-42", "app.seq", "1234")
REQ = request_json([span_json(1, 1, "work", 0, 5, attributes=ATTRS), span_json(1, 2, "bare", 1, 2, parent=1)])


def _json(tmp_path: Path) -> Path:
    p = tmp_path / "d.json"
    p.write_text(line(REQ) + "\n")
    return p


def _proto(tmp_path: Path) -> Path:
    # The proto twin of REQ, with the attributes the test helper can write (strings and ints) and
    # the long string: bools, doubles and arrays are dropped by both readers alike.
    simple = request_json([span_json(1, 1, "work", 0, 5, attributes=[ATTRS[0], ATTRS[1], ATTRS[4], ATTRS[5]]),
                           span_json(1, 2, "bare", 1, 2, parent=1)])
    body = to_proto(simple).SerializeToString()
    p = tmp_path / "d.pb"
    p.write_bytes(struct.pack(">I", len(body)) + body)
    return p


@pytest.mark.parametrize("make", [_json, _proto], ids=["otlp-json", "otlp-proto"])
def test_string_and_integer_values_are_kept_and_the_rest_dropped(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    spans = {s.name: s for s in read_paths([make(tmp_path)], values=True).spans}
    assert spans["work"].values == WANT
    assert spans["bare"].values == ()


@pytest.mark.parametrize("make", [_json, _proto], ids=["otlp-json", "otlp-proto"])
def test_values_are_not_read_when_not_asked_for(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    assert all(s.values == () for s in read_paths([make(tmp_path)], values=False).spans)


def test_by_default_values_are_read_for_inputs_read_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _json(tmp_path)
    assert {s.name: s.values for s in read_paths([path]).spans}["work"] == WANT
    # An input big enough to be read in parallel keeps its reading speed: no values.
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", path.stat().st_size)
    assert all(s.values == () for s in read_paths([path]).spans)


def test_equal_values_are_one_string_object(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text(line(REQ) + "\n" + line(REQ) + "\n")
    works = [s for s in read_paths([p], values=True).spans if s.name == "work"]
    assert works[0].values[1] is works[1].values[1]
