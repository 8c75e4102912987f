"""One serialized ``ExportTraceServiceRequest`` into ``Span`` records, with upb.

Apart from the file format (``otlp_proto.py``) so that protobuf is imported only when a proto
dump or a receiver needs it: reading JSON dumps starts faster and ~5 MB lighter without it.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from ctxdoctor.model import Span, Unit
from ctxdoctor.readers.interface import MAX_VALUE_CHARS, SpanSink
from ctxdoctor.units import RESOURCE_KEYS, Scalar, UnitTable

__all__ = ["DecodeError", "request_spans"]


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


#: One object per flags value below 1024 (the defined bits; 0x101 and 0x301 are not among
#: CPython's cached small ints), so a million spans do not carry a million copies.
_FLAGS_SEEN: dict[int, int] = {}
_THREAD_MARK = b"thread."


def _slim_request_class() -> tuple[type[Message], type[Message], type[Message]]:
    """``ExportTraceServiceRequest`` as the analysis reads it: the same field numbers, only the
    fields it needs, and the resource, attributes and links as raw bytes.

    upb then skips everything else in C (events, scope, trace state...), a resource's bytes are
    its cache key as they stand, and a span's attributes are parsed only when they name a thread.
    Length-delimited messages and ``bytes`` share one wire type, so the same records parse.
    """
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="ctxdoctor/slim_trace.proto", package="ctxdoctor.slim", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = file.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            field = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name

    one, many = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    message("Status", ("code", 3, f.TYPE_INT32, one, ""))
    message(
        "Span",
        ("trace_id", 1, f.TYPE_BYTES, one, ""),
        ("span_id", 2, f.TYPE_BYTES, one, ""),
        ("parent_span_id", 4, f.TYPE_BYTES, one, ""),
        ("name", 5, f.TYPE_STRING, one, ""),
        ("kind", 6, f.TYPE_INT32, one, ""),
        ("start_time_unix_nano", 7, f.TYPE_FIXED64, one, ""),
        ("end_time_unix_nano", 8, f.TYPE_FIXED64, one, ""),
        ("attributes", 9, f.TYPE_BYTES, many, ""),
        ("links", 13, f.TYPE_BYTES, many, ""),
        ("status", 15, f.TYPE_BYTES, one, ""),
        ("flags", 16, f.TYPE_FIXED32, one, ""),
    )
    message("ScopeSpans", ("spans", 2, f.TYPE_MESSAGE, many, ".ctxdoctor.slim.Span"))
    message(
        "ResourceSpans",
        ("resource", 1, f.TYPE_BYTES, one, ""),
        ("scope_spans", 2, f.TYPE_BYTES, many, ""),
    )
    message("Request", ("resource_spans", 1, f.TYPE_MESSAGE, many, ".ctxdoctor.slim.ResourceSpans"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"ctxdoctor.slim.{name}"))
        for name in ("Request", "ScopeSpans", "Status")
    )


# A resource's scopes stay raw until the resource is reached, so that whether any of its spans
# can name a thread is one search over its bytes; in most services none can.
_SlimRequest, _SlimScopeSpans, _SlimStatus = _slim_request_class()


def _thread_unit(base: Unit, attrs: Iterable[bytes], units: UnitTable) -> Unit:
    tid = tname = None
    for raw in attrs:
        if _THREAD_MARK in raw:
            kv = KeyValue.FromString(raw)
            if kv.key == "thread.id":
                tid = _scalar(kv.value)
            elif kv.key == "thread.name":
                tname = _scalar(kv.value)
    return units.thread_unit(base, tid, tname) if tid is not None or tname is not None else base


def _span_values(attrs: Iterable[bytes], seen: dict[str, str]) -> tuple[str, ...]:
    """A span's string and integer attributes, flattened (key, value, ...); ``seen`` interns them."""
    out: list[str] = []
    for raw in attrs:
        kv = KeyValue.FromString(raw)
        which = kv.value.WhichOneof("value")
        if which == "string_value":
            text = kv.value.string_value
            if not text or len(text) > MAX_VALUE_CHARS:
                continue
        elif which == "int_value":
            text = str(kv.value.int_value)
        else:
            continue
        out += (seen.setdefault(kv.key, kv.key), seen.setdefault(text, text))
    return tuple(out)


def request_spans(
    body: bytes,
    units: UnitTable,
    emit: SpanSink,
    names: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> int:
    """Turn a serialized ``ExportTraceServiceRequest`` into ``Span`` records; shared with the
    receiver's live view. Raises ``DecodeError`` for bytes that are not one.

    ``values``: keep each span's string and integer attributes (``Span.values``), interned in it.
    """
    req = _SlimRequest.FromString(body)
    count = 0
    from_bytes = int.from_bytes
    flags_seen = _FLAGS_SEEN
    # Spans of one trace share one id object: most of a batch belongs to a few traces; a span id
    # and the parent ids naming it within the batch likewise (see the JSON reader).
    trace_ids: dict[bytes, int] = {}
    span_ids: dict[bytes, int] = {}
    names = {} if names is None else names  # one string object per span name
    threads_named = _THREAD_MARK in body
    scope_spans = _SlimScopeSpans.FromString
    for rs in req.resource_spans:
        key = rs.resource
        base = units.known(key)
        if base is None:
            attrs = Resource.FromString(key).attributes
            base = units.resource_unit(key, {kv.key: _scalar(kv.value) for kv in attrs if kv.key in RESOURCE_KEYS})
        scopes = rs.scope_spans
        spans_name_threads = threads_named and any(_THREAD_MARK in raw for raw in scopes)
        for raw_scope in scopes:
            for s in scope_spans(raw_scope).spans:
                t_raw, s_raw = s.trace_id, s.span_id
                if len(t_raw) != 16 or len(s_raw) != 8:
                    continue
                trace_id = trace_ids.get(t_raw) or trace_ids.setdefault(t_raw, from_bytes(t_raw, "big"))
                span_id = span_ids.get(s_raw) or span_ids.setdefault(s_raw, from_bytes(s_raw, "big"))
                p_raw = s.parent_span_id
                parent = (span_ids.get(p_raw) or span_ids.setdefault(p_raw, from_bytes(p_raw, "big"))) if p_raw else 0
                if not trace_id or not span_id:
                    continue
                unit = base
                if spans_name_threads:
                    attrs = s.attributes
                    if attrs and _THREAD_MARK in b"".join(attrs):  # one C call, not a loop
                        unit = _thread_unit(base, attrs, units)
                links: tuple[int, ...] = ()
                if s.links:
                    links = tuple(from_bytes(ProtoSpan.Link.FromString(lk).trace_id, "big") for lk in s.links)
                flags = s.flags
                status = s.status
                span_values = _span_values(s.attributes, values) if values is not None and s.attributes else ()
                emit(
                    Span(
                        trace_id,
                        span_id,
                        parent,
                        names.setdefault(name := s.name, name),
                        s.kind,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        flags_seen.setdefault(flags, flags) if flags < 1024 else flags,
                        unit,
                        links,
                        _SlimStatus.FromString(status).code if status else 0,
                        span_values,
                    )
                )
                count += 1
    return count
