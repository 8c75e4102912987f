"""The dump encoder (wire bytes -> OTLP/JSON) against protobuf's own JSON mapping and ctxdoctor's reader.

``json_format.MessageToDict`` of upb's parse is the reference for everything except ids (which it
writes as base64, where OTLP/JSON wants hex); the reader is the reference for what analysis will
see. The transcoder reads wire bytes itself, so besides what SDKs send it is fed what protobuf
allows but serialisers do not write (fields out of order, repeated singular fields, unknown fields,
padded varints) and mutated bytes: whatever upb makes of the bytes, the line must say the same,
and what upb rejects must be rejected.
"""

from __future__ import annotations

import base64
import json
import math
import random
import struct
from pathlib import Path
from typing import Any

import msgspec
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from ctxdoctor.readers import read_paths
from ctxdoctor.receiver.decode import parse_json
from ctxdoctor.receiver.encode import TranscodeError, Transcoder, screen_request
from tests.helpers import ROOT, varint

#: One transcoder for the whole module, as the converter keeps one: its caches are warm and mixed.
_SHARED = Transcoder()


def _line(req: ExportTraceServiceRequest) -> bytes:
    return _SHARED.transcode(req.SerializeToString()).line


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


_SPAN_KEYS = [fd.json_name for fd in Span.DESCRIPTOR.fields]


def _reference_line(req: ExportTraceServiceRequest) -> bytes:
    """The reference as the bytes the dump must hold, as msgspec writes numbers and escapes
    strings. MessageToDict orders fields by number; the dump keeps the ``.proto`` declaration order,
    as the Collector does, which differs only in a span (``flags``, field 16, follows
    ``parentSpanId``)."""
    doc = _reference(req)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            ss_spans = ss.get("spans", [])
            ss_spans[:] = [{k: sp[k] for k in _SPAN_KEYS if k in sp} for sp in ss_spans]
    return msgspec.json.encode(doc) + b"\n"


_STRINGS = ["", "x", 'héllo "quoted" \\ \n\t', "\u2603", "a" * 50, "\x00\x1f\x7f\u2028\U0001f600", "</script>"]
_DOUBLES = [0.0, -0.0, 0.5, -1e300, 1e-300, 5e-324, 1e16, 3.141592653589793, math.inf, -math.inf, math.nan]


def _value(rng: random.Random, depth: int = 0) -> AnyValue:
    kinds = ["s", "i", "b", "d", "bytes", "strindex", "empty"] + (["arr", "kv"] if depth < 2 else [])
    kind = rng.choice(kinds)
    v = AnyValue()
    if kind == "s":
        v.string_value = rng.choice(_STRINGS)
    elif kind == "i":
        v.int_value = rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 2**53 + 1])
    elif kind == "b":
        v.bool_value = rng.choice([True, False])
    elif kind == "d":
        v.double_value = rng.choice(_DOUBLES)
    elif kind == "bytes":
        v.bytes_value = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 9)))
    elif kind == "strindex":
        v.string_value_strindex = rng.choice([0, 7, -2])
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
        kv = target.add(key=rng.choice(["service.name", "thread.id", f"attr.{i}", "", "ключ"]))
        if rng.random() < 0.95:
            kv.value.CopyFrom(_value(rng))
        if rng.random() < 0.05:
            kv.key_strindex = rng.choice([3, -1])


def random_request(rng: random.Random, spans: int = 20) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for r in range(rng.randrange(1, 3)):
        rs = req.resource_spans.add()
        if rng.random() < 0.9:
            rs.resource.SetInParent()
            rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=f"svc-{r}"))
            _attrs(rng, rs.resource.attributes, rng.randrange(0, 4))
            rs.resource.dropped_attributes_count = rng.choice([0, 3, 2**32 - 1])
            if rng.random() < 0.3:
                ref = rs.resource.entity_refs.add(type=rng.choice(["service", ""]), schema_url="https://x/1")
                ref.id_keys.extend(["service.name"])
                ref.description_keys.extend(rng.choice([[], ["d1", "d2"]]))
        if rng.random() < 0.5:
            rs.schema_url = "https://opentelemetry.io/schemas/1.21.0"
        for _ in range(rng.randrange(0, 3)):
            ss = rs.scope_spans.add()
            if rng.random() < 0.8:
                ss.scope.SetInParent()
                ss.scope.name = rng.choice(["", "lib"])
                ss.scope.version = rng.choice(["", "1.2.3"])
                _attrs(rng, ss.scope.attributes, rng.randrange(0, 2))
                ss.scope.dropped_attributes_count = rng.choice([0, 1])
            if rng.random() < 0.3:
                ss.schema_url = "https://s"
            for _ in range(rng.randrange(0, spans + 1)):
                s = ss.spans.add()
                s.trace_id = rng.randbytes(16)
                s.span_id = rng.randbytes(8)
                if rng.random() < 0.7:
                    s.parent_span_id = rng.randbytes(8)
                s.trace_state = rng.choice(["", "k=v,a=b"])
                s.flags = rng.choice([0, 0x100, 0x301, 0xFFFFFFFF])
                s.name = rng.choice(["", "GET /", "work", 'naïve "span"', "x" * 200])
                s.kind = rng.choice([0, 1, 2, 3, 4, 5, 9, 200, -3])  # open enum: unknown values stay
                s.start_time_unix_nano = rng.choice([0, 1_700_000_000_123_456_789, 2**64 - 1])
                if s.start_time_unix_nano:
                    s.end_time_unix_nano = min(s.start_time_unix_nano + rng.randrange(10**9), 2**64 - 1)
                elif rng.random() < 0.3:
                    s.end_time_unix_nano = 5
                _attrs(rng, s.attributes, rng.choice([0, 1, 4, 20]))
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
                    s.status.code = rng.choice([0, 1, 2, 7])
                    s.status.message = rng.choice(["", "boom"])
    return req


# ---------------------------------------------------------------------------------------------
# What SDKs send: the encoder against the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(300))
def test_encoder_matches_proto3_json_except_hex_ids(seed: int) -> None:
    req = random_request(random.Random(seed), spans=4)
    out = _SHARED.transcode(req.SerializeToString())
    assert out.rejected == 0
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert out.spans == len(spans)
    if not spans:
        assert out.line == b""
        return
    assert out.line.endswith(b"\n") and out.line.count(b"\n") == 1
    assert json.loads(out.line) == _reference(req)
    # Byte for byte, key order included: the dump is what the encoder has always written.
    assert out.line == _reference_line(req)
    # The live view counts traces from these: every span's, without immediate repeats.
    expected = [s.trace_id for i, s in enumerate(spans) if i == 0 or spans[i - 1].trace_id != s.trace_id]
    assert out.trace_ids == expected


def test_a_cold_and_a_tiny_cache_write_the_same_lines() -> None:
    """Caches change speed, never output; and they stay within their bound."""
    rng = random.Random(11)
    bodies = [random_request(rng, spans=6).SerializeToString() for _ in range(60)]
    tiny = Transcoder(cache_entries=3)
    for body in bodies:
        expected = Transcoder().transcode(body)
        assert tiny.transcode(body) == expected
        assert _SHARED.transcode(body) == expected
        assert all(len(c) <= 3 for c in tiny.caches())


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
    missing = expected - seen
    assert not missing, f"the random requests never set {sorted(missing)}; extend random_request and the encoder"


def test_special_values() -> None:
    req = ExportTraceServiceRequest()
    s = (
        req.resource_spans.add()
        .scope_spans.add()
        .spans.add(trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), name="n", start_time_unix_nano=2**64 - 1)
    )
    s.attributes.add(key="nan", value=AnyValue(double_value=math.nan))
    s.attributes.add(key="neg", value=AnyValue(int_value=-5))
    s.attributes.add(key="str", value=AnyValue(string_value_strindex=3))
    s.attributes.add(key="bytes", value=AnyValue(bytes_value=b"\xff\x00"))
    s.attributes.add(key="empty")
    s.status.SetInParent()
    doc = json.loads(_line(req))
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == "0102030405060708090a0b0c0d0e0f10"
    assert span["spanId"] == "0102030405060708"
    assert span["startTimeUnixNano"] == "18446744073709551615"
    assert span["attributes"] == [
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "neg", "value": {"intValue": "-5"}},
        {"key": "str", "value": {"stringValueStrindex": 3}},
        {"key": "bytes", "value": {"bytesValue": "/wA="}},
        {"key": "empty"},
    ]
    assert span["status"] == {}
    assert doc == _reference(req)


def test_invalid_ids_are_rejected_and_the_rest_kept() -> None:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    good = spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="good")
    spans.add(trace_id=b"\x01" * 15, span_id=b"\x02" * 8, name="short-trace")
    spans.add(trace_id=bytes(16), span_id=b"\x02" * 8, name="zero-trace")
    spans.add(trace_id=b"\x01" * 16, span_id=b"", name="no-span-id")
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x03" * 8, parent_span_id=b"\x04" * 4, name="short-parent")
    body = req.SerializeToString()
    # The receiver screens before journaling (removing the spans from req) ...
    screened = screen_request(req)
    assert (screened.spans, screened.rejected) == (1, 4)
    assert "short-trace" in screened.error_message and "4 span(s)" in screened.error_message
    assert [s.name for s in req.resource_spans[0].scope_spans[0].spans] == [good.name]
    # ... and the encoder drops the same spans whatever its input holds.
    out = _SHARED.transcode(body)
    assert (out.spans, out.rejected) == (1, 4)
    assert out.line == _line(req) == _reference_line(req)


def test_nothing_valid_writes_nothing() -> None:
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(trace_id=b"", span_id=b"", name="x")
    out = _SHARED.transcode(req.SerializeToString())
    assert (out.line, out.spans, out.rejected) == (b"", 0, 1)
    assert _SHARED.transcode(b"") == (b"", 0, 0, [])


# ---------------------------------------------------------------------------------------------
# What protobuf allows but serialisers do not write
# ---------------------------------------------------------------------------------------------

_WIRE_TYPES = {
    FieldDescriptor.TYPE_MESSAGE: 2,
    FieldDescriptor.TYPE_STRING: 2,
    FieldDescriptor.TYPE_BYTES: 2,
    FieldDescriptor.TYPE_BOOL: 0,
    FieldDescriptor.TYPE_INT32: 0,
    FieldDescriptor.TYPE_INT64: 0,
    FieldDescriptor.TYPE_UINT32: 0,
    FieldDescriptor.TYPE_ENUM: 0,
    FieldDescriptor.TYPE_FIXED64: 1,
    FieldDescriptor.TYPE_DOUBLE: 1,
    FieldDescriptor.TYPE_FIXED32: 5,
}


class _Wire:
    """Serialises a message by hand, optionally in the irregular ways protobuf allows."""

    def __init__(self, rng: random.Random, irregular: bool) -> None:
        self.rng = rng
        self.irregular = irregular
        #: How often each irregularity is written: some requests have one or two, some many.
        self.rate = rng.choice([0.001, 0.005, 0.05]) if irregular else 0.0

    def _maybe(self) -> bool:
        return self.rng.random() < self.rate

    def _pad(self, limit: int) -> int:
        return min(self.rng.choice([1, limit]), limit) if self._maybe() else 0

    def _tag(self, number: int, wt: int) -> bytes:
        tag = number << 3 | wt
        return varint(tag, self._pad(5 - len(varint(tag))))

    def _scalar(self, fd: FieldDescriptor, v: Any) -> bytes:
        wt = _WIRE_TYPES[fd.type]
        if wt == 2:
            data = v.encode() if isinstance(v, str) else v
            return self._tag(fd.number, 2) + varint(len(data), self._pad(2)) + data
        if wt == 0:
            return self._tag(fd.number, 0) + varint(int(v), self._pad(10 - len(varint(int(v)))))
        if wt == 1:
            return self._tag(fd.number, 1) + struct.pack("<d" if fd.type == fd.TYPE_DOUBLE else "<Q", v)
        return self._tag(fd.number, 5) + struct.pack("<I", v)

    def field(self, fd: FieldDescriptor, v: Any) -> bytes:
        if fd.type != fd.TYPE_MESSAGE:
            return self._scalar(fd, v)
        return self._scalar(fd, self.message(v))

    def decoy(self, fd: FieldDescriptor, value: Any) -> list[bytes]:
        """Occurrences of singular field ``fd`` to write before its real one, which must still win."""
        rng = self.rng
        if fd.type == fd.TYPE_MESSAGE:
            # Protobuf merges repeated occurrences of a message field: an empty one changes nothing.
            return [self._tag(fd.number, 2) + b"\x00"]
        if fd.containing_oneof is not None:
            # A oneof keeps the last member set; a message member seen earlier is discarded.
            other = rng.choice([f for f in fd.containing_oneof.fields if f.type != fd.TYPE_MESSAGE])
            return [self.field(other, self._random_scalar(other))]
        return [self.field(fd, self._random_scalar(fd))]

    def _random_scalar(self, fd: FieldDescriptor) -> Any:
        rng = self.rng
        return {
            fd.TYPE_STRING: lambda: rng.choice(_STRINGS),
            fd.TYPE_BYTES: lambda: rng.randbytes(rng.choice([0, 8, 16])),
            fd.TYPE_BOOL: lambda: rng.random() < 0.5,
            fd.TYPE_DOUBLE: lambda: rng.choice(_DOUBLES),
            fd.TYPE_FIXED64: lambda: rng.randrange(2**64),
            fd.TYPE_FIXED32: lambda: rng.randrange(2**32),
            fd.TYPE_UINT32: lambda: rng.randrange(2**32),
        }.get(fd.type, lambda: rng.randrange(-(2**31), 2**31))()

    def unknown(self, known: dict[int, int], depth: int = 0) -> bytes:
        """A field the schema does not know: another number, or a known number with another wire type."""
        rng = self.rng
        number = rng.choice([17, 29, 100, 2047, 2**29 - 1, *sorted(known)])
        wt = rng.choice([w for w in (0, 1, 2, 5, 3) if w != known.get(number) and (w != 3 or depth < 2)])
        tag = self._tag(number, wt)
        if wt == 0:
            v = rng.randrange(2**64)
            return tag + varint(v, self._pad(10 - len(varint(v))))
        if wt == 1:
            return tag + rng.randbytes(8)
        if wt == 5:
            return tag + rng.randbytes(4)
        if wt == 2:
            data = rng.randbytes(rng.randrange(0, 5))
            return tag + varint(len(data)) + data
        inner = b"".join(self.unknown({}, depth + 1) for _ in range(rng.randrange(0, 3)))
        return tag + inner + self._tag(number, 4)

    def message(self, msg: Message) -> bytes:
        rng = self.rng
        runs: list[list[bytes]] = []
        known = {fd.number: _WIRE_TYPES[fd.type] for fd in msg.DESCRIPTOR.fields}
        for fd, value in sorted(msg.ListFields(), key=lambda item: item[0].number):
            if fd.is_repeated:
                runs.append([self.field(fd, v) for v in value])
            else:
                run = self.decoy(fd, value) if self._maybe() else []
                run.append(self.field(fd, value))
                if fd.type == fd.TYPE_MESSAGE and self._maybe():
                    run.append(self._tag(fd.number, 2) + b"\x00")  # and an empty one after it
                runs.append(run)
        if self.irregular:
            for _ in range(rng.choice([1, 2]) if self._maybe() else 0):
                runs.append([self.unknown(known)])
            if self._maybe():
                # Interleave the fields, keeping the order within each (it is the order of repeats).
                out = []
                while runs:
                    run = rng.choice(runs)
                    out.append(run.pop(0))
                    runs = [r for r in runs if r]
                return b"".join(out)
            if self._maybe():
                rng.shuffle(runs)
        return b"".join(b"".join(run) for run in runs)


def test_the_hand_serialiser_writes_what_upb_writes() -> None:
    """The irregular-wire test below depends on this writer; check it where it must be exact."""
    rng = random.Random(5)
    for _ in range(30):
        req = random_request(rng, spans=4)
        assert _Wire(rng, irregular=False).message(req) == req.SerializeToString()


_IRREGULAR_SEEDS = range(1000, 1300)


@pytest.mark.parametrize("seed", _IRREGULAR_SEEDS)
def test_irregular_wire_layouts_read_as_upb_reads_them(seed: int) -> None:
    rng = random.Random(seed)
    req = random_request(rng, spans=3)
    body = _Wire(rng, irregular=True).message(req)
    parsed = ExportTraceServiceRequest.FromString(body)
    parsed.DiscardUnknownFields()
    assert parsed == req, "the irregular writer changed the meaning: fix the test"
    out = _SHARED.transcode(body)
    assert out.line == _line(req)
    if out.line:
        assert json.loads(out.line) == _reference(req)


def test_irregular_wire_layouts_cover_both_paths() -> None:
    """The seeds above include requests the fast reader takes despite irregularities (padded
    lengths and values, trailing unknown fields) and requests it must hand to upb."""
    fast = slow = 0
    for seed in _IRREGULAR_SEEDS:
        rng = random.Random(seed)
        req = random_request(rng, spans=3)
        body = _Wire(rng, irregular=True).message(req)
        if body == req.SerializeToString():
            continue
        try:
            Transcoder()._request(body)
            fast += 1
        except Exception:
            slow += 1
    assert fast >= 20 and slow >= 100, (fast, slow)


def _mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(4)
        i = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[i % len(data)] = rng.randrange(256)
        elif op == 1:
            data[i:i] = rng.randbytes(rng.randrange(1, 4))
        elif op == 2:
            del data[i : i + rng.randrange(1, 4)]
        else:
            data = data[:i]
    return bytes(data)


@pytest.mark.parametrize("seed", range(20))
def test_mutated_bytes_read_as_upb_reads_them_or_are_rejected_as_upb_rejects_them(seed: int) -> None:
    rng = random.Random(seed)
    req = random_request(rng, spans=2)
    body = req.SerializeToString()
    for _ in range(150):
        mutated = _mutate(rng, body)
        try:
            parsed = ExportTraceServiceRequest.FromString(mutated)
        except DecodeError:
            with pytest.raises(TranscodeError):
                _SHARED.transcode(mutated)
            continue
        out = _SHARED.transcode(mutated)
        screened = screen_request(parsed)
        assert (out.spans, out.rejected) == (screened.spans, screened.rejected)
        assert out.line == (_reference_line(parsed) if screened.spans else b"")


def _raw_request(span_fields: bytes, resource_attribute: bytes = b"") -> bytes:
    """A one-span request written by hand, to hold bytes no protobuf library would write."""
    span = b"\x0a\x10" + b"\x01" * 16 + b"\x12\x08" + b"\x02" * 8 + span_fields
    scope_spans = b"\x12" + varint(len(span)) + span
    resource = b"\x0a" + varint(len(resource_attribute)) + resource_attribute if resource_attribute else b""
    rs = b"\x0a" + varint(len(resource)) + resource + b"\x12" + varint(len(scope_spans)) + scope_spans
    return b"\x0a" + varint(len(rs)) + rs


@pytest.mark.parametrize(
    "body",
    [
        _raw_request(b"\x2a\x02\xc3\x28"),  # span name: a lead byte without its continuation
        _raw_request(b"\x1a\x01\xff"),  # trace state
        _raw_request(b"", b"\x0a\x04k\xed\xa0\x80"),  # resource attribute key: a UTF-16 surrogate
        _raw_request(b"\x4a\x08\x0a\x01k\x12\x03\x0a\x01\xfe"),  # span attribute value
    ],
    ids=["name", "trace-state", "resource-key", "attribute-value"],
)
def test_invalid_utf8_is_rejected_as_upb_rejects_it(body: bytes) -> None:
    """upb refuses such requests at ingest, so the journal never holds one; if it did, the record
    is reported unreadable (the converter skips it with an error), never a crash or a bad line."""
    with pytest.raises(DecodeError):
        ExportTraceServiceRequest.FromString(body)
    with pytest.raises(TranscodeError, match="UTF-8"):
        _SHARED.transcode(body)


def _nested_array(levels: int) -> bytes:
    """An AnyValue that is an array of an array ... of a string, ``levels`` arrays deep."""
    v = b"\x0a\x04leaf"
    for _ in range(levels):
        array = b"\x0a" + varint(len(v)) + v
        v = b"\x2a" + varint(len(array)) + array
    return v


@pytest.mark.parametrize(("where", "levels"), [("span", 47), ("span", 48), ("resource", 48), ("resource", 49)])
def test_nesting_is_limited_where_upb_limits_it(where: str, levels: int) -> None:
    """upb refuses messages nested more than 100 deep; how deep a value may go depends on where
    its attribute is (a resource's sits higher than a span's)."""
    value = _nested_array(levels)
    kv = b"\x0a\x04deep\x12" + varint(len(value)) + value
    attr = b"\x4a" + varint(len(kv)) + kv
    body = _raw_request(attr) if where == "span" else _raw_request(b"", kv)
    try:
        req = ExportTraceServiceRequest.FromString(body)
    except DecodeError:
        with pytest.raises(TranscodeError):
            Transcoder().transcode(body)
        with pytest.raises(TranscodeError):
            _SHARED.transcode(body)
        assert levels in (48, 49) and (where == "span") == (levels == 48)
        return
    assert _SHARED.transcode(body).line == Transcoder().transcode(body).line == _reference_line(req)
    assert levels in (47, 48) and (where == "span") == (levels == 47)


# ---------------------------------------------------------------------------------------------
# Real SDK output, and the readers
# ---------------------------------------------------------------------------------------------


def test_real_sdk_dumps_encode_as_the_reference_and_as_recorded() -> None:
    """The fixture dumps hold what Python and Node.js SDKs sent (through an earlier receiver)."""
    dumps = sorted((ROOT / "fixtures" / "scenarios").glob("*/dump.json"))
    assert len(dumps) >= 20
    lines = 0
    for dump in dumps:
        for raw in dump.read_bytes().splitlines():
            if not raw.strip():
                continue
            req, rejected, _ = parse_json(raw)
            assert rejected == 0
            out = _SHARED.transcode(req.SerializeToString())
            assert out.line == _reference_line(req), dump
            assert json.loads(out.line) == json.loads(raw), dump
            lines += 1
    assert lines > 100


@pytest.mark.parametrize("seed", range(5))
def test_dump_reads_back_with_the_analyze_reader(tmp_path: Path, seed: int) -> None:
    rng = random.Random(100 + seed)
    reqs = [random_request(rng, spans=30) for _ in range(4)]
    dump = tmp_path / "dump.json"
    dump.write_bytes(b"".join(_line(r) for r in reqs))
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
    got = [(s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start, s.end, s.flags, s.links) for s in spans]
    assert got == expected


@pytest.mark.parametrize("seed", range(5))
def test_json_decoder_inverts_the_encoder(seed: int) -> None:
    req = random_request(random.Random(200 + seed))
    line = _line(req)
    if not line:
        return
    back, rejected, _ = parse_json(line)
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


_LONG = 70 << 10  # past the length from which long strings are written from the buffer


@pytest.mark.parametrize(
    "text",
    ["a" * _LONG, "q" * _LONG + '"', "\\" + "b" * _LONG, "é" * (_LONG // 2), "c" * _LONG + "\n", "\u2028" * _LONG],
)
def test_long_strings_write_what_short_ones_do(text: str) -> None:
    """Plain ASCII, a quote, a backslash, non-ASCII and controls: in a span's attribute (alone,
    so the span is written apart from the common shape), beside another, nested in a kvlist, and
    as an event's name and a scope's version."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "s", text
    for i, attrs in enumerate(
        (
            [KeyValue(key="big", value=AnyValue(string_value=text))],
            [KeyValue(key="k", value=AnyValue(int_value=1)), KeyValue(key="big", value=AnyValue(string_value=text))],
        )
    ):
        span = ss.spans.add(trace_id=b"\x01" * 16, span_id=bytes([i + 1]) * 8, parent_span_id=b"\x09" * 8, name="op")
        span.start_time_unix_nano, span.end_time_unix_nano = 1, 2
        span.attributes.extend(attrs)
        span.events.add(name=text, time_unix_nano=1)
    nested = AnyValue()
    nested.kvlist_value.values.add(key="inner", value=AnyValue(string_value=text))
    ss.spans[1].attributes.add(key="nested", value=nested)
    assert _line(req) == _reference_line(req)


def test_a_large_value_is_held_a_few_times_not_many() -> None:
    """The converter transcodes one record at a time; a 20 MiB value in it is what sets its peak
    memory (bench/README, listen bursts). Counted with tracemalloc: at most three copies of the
    value besides the record itself (the attribute's bytes, its JSON, the line)."""
    import tracemalloc

    value = 20 << 20
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"\x03" * 8, name="op"
    )
    span.start_time_unix_nano, span.end_time_unix_nano = 1, 2
    span.attributes.add(key="payload", value=AnyValue(string_value="v" * value))
    body = req.SerializeToString()
    del req, span
    transcoder = Transcoder()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        line = transcoder.transcode(body).line
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert len(line) > value
    assert peak < 3.5 * value, f"{peak / value:.1f} copies"
