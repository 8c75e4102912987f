"""Hand-made OTLP requests for edge-case tests (labelled as such: real dumps live in fixtures/)."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def span_json(
    trace: int, span: int, name: str, start_ms: float, end_ms: float, parent: int = 0, kind: int = 1, **extra: Any
) -> dict[str, Any]:
    d = {
        "traceId": f"{trace:032x}",
        "spanId": f"{span:016x}",
        "parentSpanId": f"{parent:016x}" if parent else "",
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(T0 + int(start_ms * MS)),
        "endTimeUnixNano": str(T0 + int(end_ms * MS)),
    }
    d.update(extra)
    return d


def request_json(spans: list[dict[str, Any]], service: str = "svc", **resource: Any) -> dict[str, Any]:
    attrs = [{"key": "service.name", "value": {"stringValue": service}}]
    attrs += [{"key": "telemetry.sdk.language", "value": {"stringValue": resource.pop("language", "python")}}]
    for k, v in resource.items():
        key = k.replace("_", ".")
        val = {"intValue": str(v)} if isinstance(v, int) else {"stringValue": str(v)}
        attrs.append({"key": key, "value": val})
    return {
        "resourceSpans": [{"resource": {"attributes": attrs}, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]
    }


def line(req: dict[str, Any]) -> str:
    return json.dumps(req, separators=(",", ":"))


def to_proto(req: dict[str, Any]) -> ExportTraceServiceRequest:
    """Build the protobuf twin of a hand-made OTLP/JSON request (ids converted from hex)."""
    out = ExportTraceServiceRequest()
    for rs in req["resourceSpans"]:
        prs = out.resource_spans.add()
        for kv in rs["resource"]["attributes"]:
            a = prs.resource.attributes.add()
            a.key = kv["key"]
            if "stringValue" in kv["value"]:
                a.value.string_value = kv["value"]["stringValue"]
            else:
                a.value.int_value = int(kv["value"]["intValue"])
        for ss in rs["scopeSpans"]:
            pss = prs.scope_spans.add()
            for s in ss["spans"]:
                ps = pss.spans.add()
                ps.trace_id = bytes.fromhex(s["traceId"])
                ps.span_id = bytes.fromhex(s["spanId"])
                if s["parentSpanId"]:
                    ps.parent_span_id = bytes.fromhex(s["parentSpanId"])
                ps.name = s["name"]
                ps.kind = s["kind"]
                ps.start_time_unix_nano = int(s["startTimeUnixNano"])
                ps.end_time_unix_nano = int(s["endTimeUnixNano"])
                ps.flags = s.get("flags", 0)
                for kv in s.get("attributes", []):
                    a = ps.attributes.add()
                    a.key = kv["key"]
                    if "stringValue" in kv["value"]:
                        a.value.string_value = kv["value"]["stringValue"]
                    else:
                        a.value.int_value = int(kv["value"]["intValue"])
    return out
