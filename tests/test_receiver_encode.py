"""The dump encoder against protobuf's own JSON mapping, and against ctxdoctor's reader.

``json_format.MessageToDict`` is the reference for everything except ids (which it writes as
base64, where OTLP/JSON wants hex); the reader is the reference for what analysis will see.
"""

from __future__ import annotations

import base64
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from ctxdoctor.readers import read_paths
from ctxdoctor.receiver.decode import parse_json
from ctxdoctor.receiver.encode import encode_request


def _ids_to_hex(doc: Any) -> Any:
    """MessageToDict's base64 ids -> hex, the one place OTLP/JSON differs from proto3 JSON."""
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        sp[key] = base64.b64decode(sp[key]).hex()
                for lk in sp.get("links", []):
                    for key in ("traceId", "spanId"):
                        if key in lk:
                            lk[key] = base64.b64decode(lk[key]).hex()
    return doc


def _reference(req: ExportTraceServiceRequest) -> Any:
    return _ids_to_hex(json_format.MessageToDict(req, use_integers_for_enums=True))


def _value(rng: random.Random, depth: int = 0) -> AnyValue:
    kinds = ["s", "i", "b", "d", "bytes", "empty"] + (["arr", "kv"] if depth < 2 else [])
    kind = rng.choice(kinds)
    v = AnyValue()
    if kind == "s":
        v.string_value = rng.choice(["", "x", 'héllo "quoted" \\ \n\t', "\u2603", "a" * 50])
    elif kind == "i":
        v.int_value = rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 2**53 + 1])
    elif kind == "b":
        v.bool_value = rng.choice([True, False])
    elif kind == "d":
        v.double_value = rng.choice([0.0, 0.5, -1e300, 1e-300, 3.141592653589793, math.inf, -math.inf])
    elif kind == "bytes":
        v.bytes_value = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 9)))
    elif kind == "arr":
        v.array_value.SetInParent()
        for _ in range(rng.randrange(0, 3)):
            v.array_value.values.append(_value(rng, depth + 1))
    elif kind == "kv":
        v.kvlist_value.SetInParent()
        for i in range(rng.randrange(0, 3)):
            v.kvlist_value.values.append(KeyValue(key=f"k{i}", value=_value(rng, depth + 1)))
    return v


def _attrs(rng: random.Random, target: Any, n: int) -> None:
    for i in range(n):
        target.add(key=rng.choice(["service.name", "thread.id", f"attr.{i}", ""]), value=_value(rng))


def random_request(rng: random.Random, spans: int = 20) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for r in range(rng.randrange(1, 3)):
        rs = req.resource_spans.add()
        if rng.random() < 0.9:
            rs.resource.SetInParent()
            rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=f"svc-{r}"))
            _attrs(rng, rs.resource.attributes, rng.randrange(0, 4))
            rs.resource.dropped_attributes_count = rng.choice([0, 3])
            if rng.random() < 0.3:
                ref = rs.resource.entity_refs.add(type="service", schema_url="https://x/1")
                ref.id_keys.extend(["service.name"])
                ref.description_keys.extend(["d1", "d2"])
        if rng.random() < 0.5:
            rs.schema_url = "https://opentelemetry.io/schemas/1.21.0"
        for _ in range(rng.randrange(1, 3)):
            ss = rs.scope_spans.add()
            if rng.random() < 0.8:
                ss.scope.name = rng.choice(["", "lib"])
                ss.scope.version = rng.choice(["", "1.2.3"])
                _attrs(rng, ss.scope.attributes, rng.randrange(0, 2))
                ss.scope.dropped_attributes_count = rng.choice([0, 1])
            if rng.random() < 0.3:
                ss.schema_url = "https://s"
            for _ in range(spans):
                s = ss.spans.add()
                s.trace_id = rng.randbytes(16)
                s.span_id = rng.randbytes(8)
                if rng.random() < 0.7:
                    s.parent_span_id = rng.randbytes(8)
                s.trace_state = rng.choice(["", "k=v,a=b"])
                s.flags = rng.choice([0, 0x100, 0x301, 0xFFFFFFFF])
                s.name = rng.choice(["", "GET /", "work"])
                s.kind = rng.randrange(0, 6)
                s.start_time_unix_nano = rng.choice([0, 1_700_000_000_123_456_789, 2**64 - 1])
                if s.start_time_unix_nano:
                    s.end_time_unix_nano = min(s.start_time_unix_nano + rng.randrange(10**9), 2**64 - 1)
                _attrs(rng, s.attributes, rng.randrange(0, 5))
                s.dropped_attributes_count = rng.choice([0, 2])
                for _ in range(rng.randrange(0, 3)):
                    e = s.events.add(time_unix_nano=rng.randrange(2**63), name=rng.choice(["", "exception"]))
                    _attrs(rng, e.attributes, rng.randrange(0, 3))
                    e.dropped_attributes_count = rng.choice([0, 1])
                s.dropped_events_count = rng.choice([0, 4])
                for _ in range(rng.randrange(0, 3)):
                    lk = s.links.add(trace_id=rng.randbytes(16), span_id=rng.randbytes(8))
                    lk.trace_state = rng.choice(["", "x=y"])
                    lk.flags = rng.choice([0, 0x100])
                    _attrs(rng, lk.attributes, rng.randrange(0, 2))
                    lk.dropped_attributes_count = rng.choice([0, 5])
                s.dropped_links_count = rng.choice([0, 1])
                if rng.random() < 0.6:
                    s.status.SetInParent()
                    s.status.code = rng.choice([0, 1, 2])
                    s.status.message = rng.choice(["", "boom"])
    return req


@pytest.mark.parametrize("seed", range(25))
def test_encoder_matches_proto3_json_except_hex_ids(seed: int) -> None:
    req = random_request(random.Random(seed))
    enc = encode_request(req)
    assert enc.rejected == 0
    assert enc.line.endswith(b"\n") and enc.line.count(b"\n") == 1
    assert json.loads(enc.line) == _reference(req)


def test_every_field_of_the_trace_protos_is_covered() -> None:
    """A new field in a future opentelemetry-proto must fail here rather than vanish from dumps."""
    # Over enough random requests, every field of every message appears at least once.
    seen: set[str] = set()

    def walk(msg: Any) -> None:
        for fd, value in msg.ListFields():
            seen.add(fd.full_name)
            if fd.message_type is not None:
                for v in [value] if isinstance(value, Message) else value:
                    walk(v)

    rng = random.Random(7)
    for _ in range(40):
        walk(random_request(rng, spans=5))
    expected = set()

    def fields(desc: Any, done: set[str]) -> None:
        if desc.full_name in done:
            return
        done.add(desc.full_name)
        for fd in desc.fields:
            expected.add(fd.full_name)
            if fd.message_type is not None:
                fields(fd.message_type, done)

    fields(ExportTraceServiceRequest.DESCRIPTOR, set())
    # Profiles-only string-table indexes are never set in traces.
    missing = {f for f in expected - seen if not f.endswith("strindex")}
    assert not missing, (
        f"the random requests never set {sorted(missing)}; extend random_request and the encoder"
    )


def test_special_values() -> None:
    req = ExportTraceServiceRequest()
    s = (
        req.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), name="n", start_time_unix_nano=2**64 - 1
        )
    )
    s.attributes.add(key="nan", value=AnyValue(double_value=math.nan))
    s.attributes.add(key="neg", value=AnyValue(int_value=-5))
    s.attributes.add(key="str", value=AnyValue(string_value_strindex=3))
    doc = json.loads(encode_request(req).line)
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == "0102030405060708090a0b0c0d0e0f10"
    assert span["spanId"] == "0102030405060708"
    assert span["startTimeUnixNano"] == "18446744073709551615"
    assert span["attributes"] == [
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "neg", "value": {"intValue": "-5"}},
        {"key": "str", "value": {"stringValueStrindex": 3}},
    ]
    assert doc == _reference(req)


def test_invalid_ids_are_rejected_and_the_rest_kept() -> None:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    good = spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="good")
    spans.add(trace_id=b"\x01" * 15, span_id=b"\x02" * 8, name="short-trace")
    spans.add(trace_id=bytes(16), span_id=b"\x02" * 8, name="zero-trace")
    spans.add(trace_id=b"\x01" * 16, span_id=b"", name="no-span-id")
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x03" * 8, parent_span_id=b"\x04" * 4, name="short-parent")
    enc = encode_request(req)
    assert (enc.spans, enc.rejected) == (1, 4)
    assert "short-trace" in enc.error_message and "4 span(s)" in enc.error_message
    doc = json.loads(enc.line)
    assert [s["name"] for s in doc["resourceSpans"][0]["scopeSpans"][0]["spans"]] == [good.name]


def test_nothing_valid_writes_nothing() -> None:
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(trace_id=b"", span_id=b"", name="x")
    enc = encode_request(req)
    assert enc.line == b"" and enc.rejected == 1


@pytest.mark.parametrize("seed", range(5))
def test_dump_reads_back_with_the_analyze_reader(tmp_path: Path, seed: int) -> None:
    rng = random.Random(100 + seed)
    reqs = [random_request(rng, spans=30) for _ in range(4)]
    dump = tmp_path / "dump.json"
    dump.write_bytes(b"".join(encode_request(r).line for r in reqs))
    spans = read_paths([dump]).spans
    expected = [
        (
            int.from_bytes(s.trace_id, "big"),
            int.from_bytes(s.span_id, "big"),
            int.from_bytes(s.parent_span_id, "big"),
            s.name,
            s.kind,
            s.start_time_unix_nano,
            s.end_time_unix_nano,
            s.flags,
            tuple(int.from_bytes(lk.trace_id, "big") for lk in s.links),
        )
        for r in reqs
        for rs in r.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    got = [
        (s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start, s.end, s.flags, s.links)
        for s in spans
    ]
    assert got == expected


@pytest.mark.parametrize("seed", range(5))
def test_json_decoder_inverts_the_encoder(seed: int) -> None:
    req = random_request(random.Random(200 + seed))
    back, rejected, _ = parse_json(encode_request(req).line)
    assert rejected == 0
    assert back == req


def test_json_decoder_rejects_base64_ids_per_span() -> None:
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "name": "ok",
                            },
                            {"traceId": "W47/95gDgQPSabYzgT/GDA==", "spanId": "7uGbfsPBsXQ=", "name": "b64"},
                        ]
                    }
                ]
            }
        ]
    }
    req, rejected, problem = parse_json(json.dumps(doc).encode())
    assert rejected == 1
    assert "hex, not base64" in problem
    spans = req.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == ["ok"]
    assert spans[0].trace_id.hex() == "5b8efff798038103d269b633813fc60c"


def test_json_decoder_accepts_snake_case_and_enum_names() -> None:
    doc = {
        "resource_spans": [
            {
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": "5b8efff798038103d269b633813fc60c",
                                "span_id": "eee19b7ec3c1b174",
                                "kind": "SPAN_KIND_SERVER",
                                "start_time_unix_nano": 1544712660000000000,
                                "status": {"code": "STATUS_CODE_ERROR"},
                            }
                        ]
                    }
                ]
            }
        ]
    }
    req, rejected, _ = parse_json(json.dumps(doc).encode())
    s = req.resource_spans[0].scope_spans[0].spans[0]
    assert rejected == 0
    assert (s.kind, s.status.code, s.start_time_unix_nano) == (
        Span.SPAN_KIND_SERVER,
        Status.STATUS_CODE_ERROR,
        1544712660000000000,
    )
