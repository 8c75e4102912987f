"""OTLP/JSON requests rewritten in the shapes other systems give, for the converter-level round
trips: hand-written from the formats' published descriptions and examples (Jaeger's query API
and UI download, Zipkin's v2 API as OpenTelemetry's Zipkin exporters fill it, Tempo's trace-by-id
answers), not taken from those projects' code.

Each mirrors what the real translation does: Jaeger makes each resource a process
(``serviceName`` + tags), the kind and status ``span.kind``/``otel.status_code`` tags, the parent
a ``CHILD_OF`` reference and links ``FOLLOWS_FROM``, writes times in microseconds and a v1 trace
id without its leading zeros; Zipkin flattens everything into string tags; Tempo keeps OTLP but
writes ids in base64.
"""

from __future__ import annotations

import base64
import json
from typing import Any

_KIND_NAMES = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS_NAMES = {1: "OK", 2: "ERROR"}


def _value(v: dict[str, Any]) -> tuple[str, Any]:
    """(Jaeger tag type, value) of an OTLP AnyValue."""
    if "stringValue" in v:
        return "string", v["stringValue"]
    if "intValue" in v:
        return "int64", int(v["intValue"])
    if "boolValue" in v:
        return "bool", v["boolValue"]
    if "doubleValue" in v:
        return "float64", float(v["doubleValue"])
    return "string", json.dumps(v)


def _spans(req: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (rs.get("resource", {}), span)
        for rs in req["resourceSpans"]
        for ss in rs.get("scopeSpans", ())
        for span in ss.get("spans", ())
    ]


def _us(ns: Any) -> int:
    return int(ns) // 1000


def _kind(span: dict[str, Any]) -> int:
    return int(span.get("kind", 0))


def _status(span: dict[str, Any]) -> int:
    return int((span.get("status") or {}).get("code", 0))


def to_jaeger(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """One query API answer ``{"data": [trace, ...]}`` with every trace of ``requests``."""
    traces: dict[str, dict[str, Any]] = {}
    for req in requests:
        for resource, span in _spans(req):
            trace_hex = span["traceId"]
            # Jaeger v1 writes a trace id as the number it is: no leading zeros.
            v1_id = format(int(trace_hex, 16), "x")
            trace = traces.setdefault(trace_hex, {"traceID": v1_id, "spans": [], "processes": {}, "warnings": None})
            attrs = {kv["key"]: _value(kv["value"]) for kv in resource.get("attributes", ())}
            service = attrs.pop("service.name", ("string", "unknown_service"))[1]
            process = {
                "serviceName": service,
                "tags": [{"key": k, "type": t, "value": v} for k, (t, v) in attrs.items()],
            }
            pid = next((p for p, known in trace["processes"].items() if known == process), None)
            if pid is None:
                pid = f"p{len(trace['processes']) + 1}"
                trace["processes"][pid] = process
            refs = []
            if span.get("parentSpanId"):
                refs.append({"refType": "CHILD_OF", "traceID": v1_id, "spanID": span["parentSpanId"]})
            for link in span.get("links", ()):
                refs.append({"refType": "FOLLOWS_FROM", "traceID": link["traceId"], "spanID": link["spanId"]})
            tags = [
                {"key": kv["key"], "type": t, "value": v}
                for kv in span.get("attributes", ())
                for t, v in [_value(kv["value"])]
            ]
            if _kind(span) in _KIND_NAMES:
                tags.append({"key": "span.kind", "type": "string", "value": _KIND_NAMES[_kind(span)]})
            if _status(span) in _STATUS_NAMES:
                tags.append({"key": "otel.status_code", "type": "string", "value": _STATUS_NAMES[_status(span)]})
            start = _us(span["startTimeUnixNano"])
            trace["spans"].append(
                {
                    "traceID": v1_id,
                    "spanID": span["spanId"],
                    "flags": 1,
                    "operationName": span["name"],
                    "references": refs,
                    "startTime": start,
                    "duration": _us(span["endTimeUnixNano"]) - start,
                    "tags": tags,
                    "logs": [],
                    "processID": pid,
                    "warnings": None,
                }
            )
    return {"data": list(traces.values()), "total": 0, "limit": 0, "offset": 0, "errors": None}


def to_zipkin(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One Zipkin v2 array, as OpenTelemetry's Zipkin exporters write it."""
    out = []
    for req in requests:
        for resource, span in _spans(req):
            resource_attrs = {kv["key"]: _value(kv["value"])[1] for kv in resource.get("attributes", ())}
            tags = {kv["key"]: str(_value(kv["value"])[1]) for kv in span.get("attributes", ())}
            tags.update({k: str(v) for k, v in resource_attrs.items() if k != "service.name"})
            if _status(span) in _STATUS_NAMES:
                tags["otel.status_code"] = _STATUS_NAMES[_status(span)]
            start = _us(span["startTimeUnixNano"])
            z: dict[str, Any] = {
                "traceId": span["traceId"],
                "id": span["spanId"],
                "name": span["name"],
                "timestamp": start,
                "duration": _us(span["endTimeUnixNano"]) - start,
                "localEndpoint": {"serviceName": resource_attrs.get("service.name", "unknown_service")},
                "tags": tags,
            }
            if span.get("parentSpanId"):
                z["parentId"] = span["parentSpanId"]
            if _kind(span) in (2, 3, 4, 5):
                z["kind"] = _KIND_NAMES[_kind(span)].upper()
            out.append(z)
    return out


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def to_tempo(requests: list[dict[str, Any]], v2: bool = False) -> dict[str, Any]:
    """One Tempo trace-by-id answer (``/api/traces``, or ``/api/v2/traces`` when ``v2``): the
    OTLP of ``requests`` with base64 ids and times in microseconds' precision."""
    batches = []
    for req in requests:
        for rs in req["resourceSpans"]:
            scopes = []
            for ss in rs.get("scopeSpans", ()):
                spans = []
                for span in ss.get("spans", ()):
                    s = dict(span)
                    s["traceId"] = _b64(span["traceId"])
                    s["spanId"] = _b64(span["spanId"])
                    if span.get("parentSpanId"):
                        s["parentSpanId"] = _b64(span["parentSpanId"])
                    s["links"] = [
                        dict(lk, traceId=_b64(lk["traceId"]), spanId=_b64(lk["spanId"])) for lk in span.get("links", ())
                    ]
                    s["startTimeUnixNano"] = str(_us(span["startTimeUnixNano"]) * 1000)
                    s["endTimeUnixNano"] = str(_us(span["endTimeUnixNano"]) * 1000)
                    s["kind"] = "SPAN_KIND_" + _KIND_NAMES.get(_kind(span), "unspecified").upper()
                    spans.append(s)
                scopes.append({"scope": ss.get("scope", {}), "spans": spans})
            batches.append({"resource": rs.get("resource", {}), "scopeSpans": scopes})
    return {"trace": {"resourceSpans": batches}} if v2 else {"batches": batches}
