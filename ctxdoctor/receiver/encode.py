"""Protobuf ``ExportTraceServiceRequest`` -> strict OTLP/JSON, by a hand-written walker.

Why not ``google.protobuf.json_format``: it writes ``bytes`` fields (trace and span ids) as
base64, while OTLP/JSON requires hex; patching its output afterwards costs a second walk. The
walker below follows the proto3 JSON mapping everywhere else, exactly as ``MessageToDict``
would (default values omitted, int64/fixed64 as decimal strings, enums as integers, message
fields present when set even if empty), so the dump is what the Collector's file exporter
writes. It also validates span ids on the way, because a span the dump cannot identify is
rejected through ``partial_success`` rather than written.

Speed matters here (the receiver writes every span it is sent): the walker builds plain dicts
and lets msgspec serialise them, and touches only the fields a span actually has.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from typing import Any

import msgspec
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

_json_encode = msgspec.json.Encoder().encode

#: Sentinel ids: the OTLP specification calls all-zero ids invalid.
_ZERO16 = bytes(16)
_ZERO8 = bytes(8)


def _double(v: float) -> float | str:
    # proto3 JSON has no literal for non-finite numbers; it spells them as strings.
    if math.isfinite(v):
        return v
    if math.isnan(v):
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def any_value(v: AnyValue) -> dict[str, Any]:
    which = v.WhichOneof("value")
    if which == "string_value":
        return {"stringValue": v.string_value}
    if which == "int_value":
        return {"intValue": str(v.int_value)}
    if which == "bool_value":
        return {"boolValue": v.bool_value}
    if which == "double_value":
        return {"doubleValue": _double(v.double_value)}
    if which == "array_value":
        arr = v.array_value
        return {"arrayValue": {"values": [any_value(x) for x in arr.values]} if arr.values else {}}
    if which == "kvlist_value":
        kvl = v.kvlist_value
        return {"kvlistValue": {"values": key_values(kvl.values)} if kvl.values else {}}
    if which == "bytes_value":
        return {"bytesValue": base64.b64encode(v.bytes_value).decode("ascii")}
    if which == "string_value_strindex":
        return {"stringValueStrindex": v.string_value_strindex}
    return {}


def key_value(kv: KeyValue) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if kv.key:
        out["key"] = kv.key
    if kv.HasField("value"):
        out["value"] = any_value(kv.value)
    if kv.key_strindex:
        out["keyStrindex"] = kv.key_strindex
    return out


def key_values(kvs: Iterable[KeyValue]) -> list[dict[str, Any]]:
    out = []
    for kv in kvs:
        # The common case (a key and a scalar value) inlined: most attributes are strings.
        value = kv.value
        which = value.WhichOneof("value")
        if kv.key and which == "string_value" and not kv.key_strindex:
            out.append({"key": kv.key, "value": {"stringValue": value.string_value}})
        else:
            out.append(key_value(kv))
    return out


def resource(r: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.attributes:
        out["attributes"] = key_values(r.attributes)
    if r.dropped_attributes_count:
        out["droppedAttributesCount"] = r.dropped_attributes_count
    if r.entity_refs:
        refs = []
        for e in r.entity_refs:
            ref: dict[str, Any] = {}
            if e.schema_url:
                ref["schemaUrl"] = e.schema_url
            if e.type:
                ref["type"] = e.type
            if e.id_keys:
                ref["idKeys"] = list(e.id_keys)
            if e.description_keys:
                ref["descriptionKeys"] = list(e.description_keys)
            refs.append(ref)
        out["entityRefs"] = refs
    return out


def scope(s: InstrumentationScope) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if s.name:
        out["name"] = s.name
    if s.version:
        out["version"] = s.version
    if s.attributes:
        out["attributes"] = key_values(s.attributes)
    if s.dropped_attributes_count:
        out["droppedAttributesCount"] = s.dropped_attributes_count
    return out


def _span_problem(trace_id: bytes, span_id: bytes, parent: bytes) -> str | None:
    if len(trace_id) != 16 or trace_id == _ZERO16:
        return f"traceId {trace_id.hex() or '(empty)'} is not 16 non-zero bytes"
    if len(span_id) != 8 or span_id == _ZERO8:
        return f"spanId {span_id.hex() or '(empty)'} is not 8 non-zero bytes"
    if parent and len(parent) != 8:
        return f"parentSpanId {parent.hex()} is not 8 bytes"
    return None


class Screened(msgspec.Struct, frozen=True):
    """What ``screen_request`` found: the counts the exporter is answered with."""

    spans: int
    rejected: int
    error_message: str
    #: (service.name, serialised resource) of each distinct resource: one per SDK instance.
    resources: tuple[tuple[str, bytes], ...]

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(svc for svc, _ in self.resources))


class Encoded(Screened, frozen=True):
    """One request, screened and encoded. ``line`` is empty when no span survived."""

    line: bytes = b""


def screen_request(req: ExportTraceServiceRequest) -> Screened:
    """Check every span's ids and remove (in place) the spans a dump could not identify.

    This is all the receiver does per span before acknowledging a request: the JSON encoding
    happens later, off the request path, from the journal.
    """
    kept = 0
    rejected = 0
    first_problem = ""
    resources: list[tuple[str, bytes]] = []
    for rs in req.resource_spans:
        service = "unknown_service"
        if rs.HasField("resource"):
            res = rs.resource
            for kv in res.attributes:
                if kv.key == "service.name":
                    service = kv.value.string_value or service
                    break
            ident = (service, res.SerializeToString(deterministic=True))
        else:
            ident = (service, b"")
        if ident not in resources:
            resources.append(ident)
        for ss in rs.scope_spans:
            spans = ss.spans
            bad: list[int] = []
            for i, s in enumerate(spans):
                trace_id = s.trace_id
                span_id = s.span_id
                parent = s.parent_span_id
                if (
                    len(trace_id) != 16
                    or len(span_id) != 8
                    or trace_id == _ZERO16
                    or span_id == _ZERO8
                    or (parent and len(parent) != 8)
                ):
                    bad.append(i)
                    if not first_problem:
                        first_problem = f"span {s.name!r}: {_span_problem(trace_id, span_id, parent)}"
            kept += len(spans) - len(bad)
            if bad:
                rejected += len(bad)
                for i in reversed(bad):
                    del spans[i]
    error = f"{rejected} span(s) rejected for invalid ids; first: {first_problem}" if rejected else ""
    return Screened(kept, rejected, error, tuple(resources))


def encode_request(req: ExportTraceServiceRequest) -> Encoded:
    """Encode a request as one OTLP/JSON line (with a trailing newline), dropping bad spans
    (through ``screen_request``, which removes them from ``req``)."""
    screened = screen_request(req)
    resource_spans = []
    for rs in req.resource_spans:
        rs_out: dict[str, Any] = {}
        if rs.HasField("resource"):
            rs_out["resource"] = resource(rs.resource)
        scope_list = []
        for ss in rs.scope_spans:
            ss_out: dict[str, Any] = {}
            if ss.HasField("scope"):
                ss_out["scope"] = scope(ss.scope)
            spans_out = [_span(s) for s in ss.spans]
            if spans_out:
                ss_out["spans"] = spans_out
            if ss.schema_url:
                ss_out["schemaUrl"] = ss.schema_url
            scope_list.append(ss_out)
        if scope_list:
            rs_out["scopeSpans"] = scope_list
        if rs.schema_url:
            rs_out["schemaUrl"] = rs.schema_url
        resource_spans.append(rs_out)
    line = b"" if not screened.spans else _json_encode({"resourceSpans": resource_spans}) + b"\n"
    return Encoded(screened.spans, screened.rejected, screened.error_message, screened.resources, line)


def _span(s: Any) -> dict[str, Any]:
    parent = s.parent_span_id
    o: dict[str, Any] = {"traceId": s.trace_id.hex(), "spanId": s.span_id.hex()}
    if s.trace_state:
        o["traceState"] = s.trace_state
    if parent:
        o["parentSpanId"] = parent.hex()
    if s.flags:
        o["flags"] = s.flags
    if s.name:
        o["name"] = s.name
    if s.kind:
        o["kind"] = s.kind
    if s.start_time_unix_nano:
        o["startTimeUnixNano"] = str(s.start_time_unix_nano)
    if s.end_time_unix_nano:
        o["endTimeUnixNano"] = str(s.end_time_unix_nano)
    if s.attributes:
        o["attributes"] = key_values(s.attributes)
    if s.dropped_attributes_count:
        o["droppedAttributesCount"] = s.dropped_attributes_count
    if s.events:
        o["events"] = [_event(e) for e in s.events]
    if s.dropped_events_count:
        o["droppedEventsCount"] = s.dropped_events_count
    if s.links:
        o["links"] = [_link(lk) for lk in s.links]
    if s.dropped_links_count:
        o["droppedLinksCount"] = s.dropped_links_count
    if s.HasField("status"):
        st = s.status
        so: dict[str, Any] = {}
        if st.message:
            so["message"] = st.message
        if st.code:
            so["code"] = st.code
        o["status"] = so
    return o


def _event(e: Any) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if e.time_unix_nano:
        o["timeUnixNano"] = str(e.time_unix_nano)
    if e.name:
        o["name"] = e.name
    if e.attributes:
        o["attributes"] = key_values(e.attributes)
    if e.dropped_attributes_count:
        o["droppedAttributesCount"] = e.dropped_attributes_count
    return o


def _link(lk: Any) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if lk.trace_id:
        o["traceId"] = lk.trace_id.hex()
    if lk.span_id:
        o["spanId"] = lk.span_id.hex()
    if lk.trace_state:
        o["traceState"] = lk.trace_state
    if lk.attributes:
        o["attributes"] = key_values(lk.attributes)
    if lk.dropped_attributes_count:
        o["droppedAttributesCount"] = lk.dropped_attributes_count
    if lk.flags:
        o["flags"] = lk.flags
    return o
