"""Readers: every accepted input shape, and the errors for the rest. Inputs here are hand-made
edge cases (labelled); the real SDK dumps are exercised in tests/diagnose/test_scenarios.py."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest

from ctxdoctor.errors import InputError
from ctxdoctor.readers import read_paths
from tests.helpers import T0, line, request_json, span_json, to_proto

REQ = request_json(
    [
        span_json(0xA1, 0x1, "GET /x", 0, 10, kind=2),
        span_json(0xA1, 0x2, "child", 1, 9, parent=0x1, attributes=[{"key": "thread.id", "value": {"intValue": "7"}}]),
    ],
    service="api",
    process_pid=42,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_json_lines_ids_times_units(tmp_path: Path) -> None:
    p = write(tmp_path, "d.json", line(REQ) + "\n" + line(REQ) + "\n")
    dump = read_paths([p])
    assert len(dump.spans) == 4 and not dump.warnings
    root, child = dump.spans[0], dump.spans[1]
    assert root.trace_id == 0xA1 and root.span_id == 1 and root.parent_span_id == 0
    assert child.parent_span_id == 1 and child.start == T0 + 1_000_000
    assert root.unit.service == "api" and root.unit.pid == 42 and root.unit.language == "python"
    assert child.unit.thread_id == 7 and root.unit.thread_id is None
    # The same resource on every line interns to one unit object.
    assert dump.spans[2].unit is root.unit


def test_pretty_printed_single_document(tmp_path: Path) -> None:
    p = write(tmp_path, "pretty.json", json.dumps(REQ, indent=2))
    assert [s.name for s in read_paths([p]).spans] == ["GET /x", "child"]


def test_lenient_snake_case_enum_names_numbers(tmp_path: Path) -> None:
    doc = {
        "resource_spans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"string_value": "snake"}}]},
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": "0" * 31 + "b",
                                "span_id": "0" * 15 + "c",
                                "parent_span_id": "",
                                "name": "job",
                                "kind": "SPAN_KIND_CONSUMER",
                                "start_time_unix_nano": T0,
                                "end_time_unix_nano": T0 + 5,
                            }
                        ]
                    }
                ],
            }
        ]
    }
    s = read_paths([write(tmp_path, "snake.json", json.dumps(doc))]).spans[0]
    assert (s.trace_id, s.span_id, s.kind, s.end - s.start, s.unit.service) == (0xB, 0xC, 5, 5, "snake")


def test_empty_ids_are_skipped_with_a_warning(tmp_path: Path) -> None:
    req = request_json([span_json(0xA1, 0x1, "ok", 0, 1), {**span_json(0xA1, 0x2, "noid", 0, 1), "spanId": ""}])
    dump = read_paths([write(tmp_path, "e.json", line(req))])
    assert [s.name for s in dump.spans] == ["ok"]
    assert "noid" in str(dump.warnings[0]) and ":1:" in str(dump.warnings[0]) + ":"


def test_base64_ids_are_an_error_naming_line_and_field(tmp_path: Path) -> None:
    bad = request_json([{**span_json(0xA1, 0x1, "b64", 0, 1), "traceId": "AAAAAAAAAAAAAAAAAAAAoQ=="}])
    p = write(tmp_path, "b64.json", line(REQ) + "\n" + line(bad) + "\n")
    with pytest.raises(InputError) as exc:
        read_paths([p])
    msg = str(exc.value)
    assert exc.value.line == 2 and "traceId" in msg and "hex, not base64" in msg and "b64.json:2" in msg


def test_malformed_middle_line_is_an_error(tmp_path: Path) -> None:
    p = write(tmp_path, "m.json", line(REQ) + "\n{not json\n" + line(REQ) + "\n")
    with pytest.raises(InputError) as exc:
        read_paths([p])
    assert exc.value.line == 2 and "malformed JSON" in str(exc.value)


def test_wrong_shape_is_an_error(tmp_path: Path) -> None:
    p = write(tmp_path, "shape.json", '{"resourceSpans": 5}\n' + line(REQ) + "\n")
    with pytest.raises(InputError) as exc:
        read_paths([p])
    assert exc.value.line == 1 and "resourceSpans" in str(exc.value)


def test_truncated_last_line_warns_and_keeps_the_rest(tmp_path: Path) -> None:
    full = line(REQ)
    p = write(tmp_path, "t.json", full + "\n" + full + "\n" + full[: len(full) // 2])
    dump = read_paths([p])
    assert len(dump.spans) == 4
    assert len(dump.warnings) == 1 and dump.warnings[0].line == 3 and "truncated" in dump.warnings[0].message


def test_gzip_by_content(tmp_path: Path) -> None:
    p = tmp_path / "d.json.gz"
    p.write_bytes(gzip.compress((line(REQ) + "\n").encode()))
    assert len(read_paths([p]).spans) == 2


def proto_file(tmp_path: Path, n: int = 2, cut: int = 0) -> Path:
    body = to_proto(REQ).SerializeToString()
    data = b"".join(struct.pack(">I", len(body)) + body for _ in range(n))
    p = tmp_path / "d.pb"
    p.write_bytes(data[: len(data) - cut] if cut else data)
    return p


def test_proto_format_matches_json(tmp_path: Path) -> None:
    from_proto = read_paths([proto_file(tmp_path)]).spans
    from_json = read_paths([write(tmp_path, "d.json", line(REQ) + "\n" + line(REQ))]).spans
    key = [
        (s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start, s.end, s.unit.thread_id) for s in from_json
    ]
    assert [
        (s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start, s.end, s.unit.thread_id) for s in from_proto
    ] == key


def test_proto_truncated_tail_warns(tmp_path: Path) -> None:
    dump = read_paths([proto_file(tmp_path, n=3, cut=10)])
    assert len(dump.spans) == 4 and "truncated" in dump.warnings[0].message and dump.warnings[0].offset is not None


def test_proto_garbage_record_is_an_error_with_offset(tmp_path: Path) -> None:
    good = to_proto(REQ).SerializeToString()
    p = tmp_path / "g.pb"
    p.write_bytes(struct.pack(">I", len(good)) + good + struct.pack(">I", 5) + b"\xff\xff\xff\xff\xff")
    with pytest.raises(InputError) as exc:
        read_paths([p])
    assert exc.value.offset == 4 + len(good)


def test_not_a_dump(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        read_paths([write(tmp_path, "x.txt", "hello world, this is not a trace dump\n")])
    assert "not a trace dump" in str(exc.value) or "malformed" in str(exc.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_paths([tmp_path / "nope.json"])
    with pytest.raises(InputError, match="directory"):
        read_paths([tmp_path])


def test_status_codes_as_integers_or_names(tmp_path: Path) -> None:
    req = request_json(
        [
            {**span_json(0xA1, 0x1, "err", 0, 1), "status": {"code": 2, "message": "boom"}},
            {**span_json(0xA1, 0x2, "named", 0, 1, parent=0x1), "status": {"code": "STATUS_CODE_OK"}},
            span_json(0xA1, 0x3, "unset", 0, 1, parent=0x1),
        ]
    )
    spans = read_paths([write(tmp_path, "st.json", line(req))]).spans
    assert [s.status for s in spans] == [2, 1, 0]


def test_progress_is_reported_within_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ctxdoctor.readers as readers

    monkeypatch.setattr(readers, "PROGRESS_EVERY", 2)
    p = write(tmp_path, "p.json", "\n".join(line(REQ) for _ in range(5)) + "\n")
    seen: list[tuple[int, int]] = []
    read_paths([p], progress=lambda done, total: seen.append((done, total)))
    size = p.stat().st_size
    assert len(seen) >= 5  # every second span, then the end of the file
    assert all(total == size for _, total in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] == size
