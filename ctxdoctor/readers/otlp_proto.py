"""The Collector file exporter's ``proto`` format: records of a 4-byte big-endian length
followed by that many bytes of ``ExportTraceServiceRequest``."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import BinaryIO

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ctxdoctor.errors import InputError
from ctxdoctor.model import Span
from ctxdoctor.readers.interface import ReadWarning, SpanSink
from ctxdoctor.units import RESOURCE_KEYS, SPAN_THREAD_KEYS, Scalar, UnitTable

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: A record larger than this is not a length prefix but some other file.
MAX_RECORD = 1 << 30


def _scalar(v: AnyValue) -> Scalar:
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "bool_value":
        return v.bool_value
    if which == "double_value":
        return v.double_value
    return None


_THREAD_KEYS = (b"thread.id", b"thread.name")
#: One object per flags value below 1024 (the defined bits; 0x101 and 0x301 are not among
#: CPython's cached small ints), so a million spans do not carry a million copies.
_FLAGS_SEEN: dict[int, int] = {}


def request_spans(
    req: ExportTraceServiceRequest,
    units: UnitTable,
    emit: SpanSink,
    body: bytes | None = None,
    names: dict[str, str] | None = None,
) -> int:
    """Turn a protobuf request into ``Span`` records; shared with the receiver.

    ``body``, the serialized request when the caller has it, lets the common case skip span
    attributes altogether: when every ``thread.*`` key in it belongs to a resource, no span
    names its thread, and walking every span's attributes (a wrapper object each) is wasted.
    """
    count = 0
    from_bytes = int.from_bytes
    flags_seen = _FLAGS_SEEN
    # Spans of one trace share one id object: most of a batch belongs to a few traces.
    trace_ids: dict[bytes, int] = {}
    names = {} if names is None else names  # one string object per span name
    resources = []
    in_resources = 0
    for rs in req.resource_spans:
        key = rs.resource.SerializeToString(deterministic=True)
        if b"thread." in key:
            in_resources += sum(key.count(k) for k in _THREAD_KEYS)
        unit = units.known(key)
        if unit is None:
            attrs = rs.resource.attributes
            unit = units.resource_unit(key, {kv.key: _scalar(kv.value) for kv in attrs if kv.key in RESOURCE_KEYS})
        resources.append(unit)
    scan = body is None or sum(body.count(k) for k in _THREAD_KEYS) > in_resources
    for rs, base in zip(req.resource_spans, resources, strict=True):
        for ss in rs.scope_spans:
            for s in ss.spans:
                unit = base
                if scan and s.attributes:
                    tid = tname = None
                    for kv in s.attributes:
                        if kv.key in SPAN_THREAD_KEYS:
                            if kv.key == "thread.id":
                                tid = _scalar(kv.value)
                            else:
                                tname = _scalar(kv.value)
                    if tid is not None or tname is not None:
                        unit = units.thread_unit(base, tid, tname)
                t_raw, s_raw = s.trace_id, s.span_id
                if len(t_raw) != 16 or len(s_raw) != 8:
                    continue
                trace_id = trace_ids.get(t_raw) or trace_ids.setdefault(t_raw, from_bytes(t_raw, "big"))
                span_id = from_bytes(s_raw, "big")
                if not trace_id or not span_id:
                    continue
                links = tuple(from_bytes(lk.trace_id, "big") for lk in s.links) if s.links else ()
                emit(
                    Span(
                        trace_id,
                        span_id,
                        from_bytes(s.parent_span_id, "big"),
                        names.setdefault(name := s.name, name),
                        s.kind,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        flags_seen.setdefault(s.flags, s.flags) if s.flags < 1024 else s.flags,
                        unit,
                        links,
                        s.status.code,
                    )
                )
                count += 1
    return count


class OtlpProtoReader:
    name = "otlp-proto"

    def sniff(self, head: bytes) -> bool:
        if len(head) < 4:
            return False
        (length,) = struct.unpack(">I", head[:4])
        return 0 < length <= MAX_RECORD and head[:1] != b"{"

    def read(
        self,
        path: str,
        stream: BinaryIO,
        units: UnitTable,
        emit: SpanSink,
        warn: Callable[[ReadWarning], None],
    ) -> None:
        offset = 0
        names: dict[str, str] = {}
        while True:
            header = stream.read(4)
            if not header:
                return
            if len(header) < 4:
                warn(
                    ReadWarning(
                        path, "truncated length prefix at the end; everything before it was read", offset=offset
                    )
                )
                return
            (length,) = struct.unpack(">I", header)
            if length > MAX_RECORD:
                raise InputError(
                    path,
                    f"record length {length} is not plausible: expected a 4-byte big-endian length "
                    "followed by an ExportTraceServiceRequest (Collector file exporter, format: proto)",
                    offset=offset,
                )
            body = stream.read(length)
            if len(body) < length:
                warn(
                    ReadWarning(
                        path,
                        f"last record is truncated ({len(body)} of {length} bytes; the writer was probably "
                        "stopped mid-write); everything before it was read",
                        offset=offset,
                    )
                )
                return
            if body[:4] == _ZSTD_MAGIC:
                raise InputError(
                    path,
                    "record is zstd-compressed (Collector file exporter with compression: zstd); "
                    "write the dump without compression, or with format: json",
                    offset=offset,
                )
            req = ExportTraceServiceRequest()
            try:
                req.ParseFromString(body)
            except DecodeError as exc:
                raise InputError(
                    path, f"record is not a valid ExportTraceServiceRequest: {exc}", offset=offset
                ) from None
            request_spans(req, units, emit, body, names)
            offset += 4 + length
