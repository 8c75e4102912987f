"""Zipkin v2 JSON: what ``GET /api/v2/trace/{id}`` and ``/api/v2/traces`` answer and what Zipkin
exporters send to ``POST /api/v2/spans``: an array of spans, or JSON lines of such arrays.

A span is flat: ``traceId`` (16 or 32 hex digits), ``id``, ``parentId``, ``kind``, ``timestamp``
and ``duration`` in microseconds, ``localEndpoint.serviceName`` and string ``tags``. Zipkin has
no resource, so OpenTelemetry's Zipkin exporters copy the resource attributes into every span's
tags; the tags in the resource namespaces of the semantic conventions (``process.pid``,
``host.name``...) are put back into the resource, which is what tells processes and SDK instances
apart. ``thread.id``/``thread.name`` stay on the span, where the OTLP readers also look for them.
A missing ``kind`` is INTERNAL (the exporters omit it for those). ``shared`` marks the server half
of a span id shared with its client (Zipkin's B3 single-host spans); it is read as it stands.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ctxdoctor.readers.documents import (
    OTEL_FIELD_TAGS,
    DocumentReader,
    ShapeError,
    attribute,
    expect,
    hex_id,
    json_type,
    micros,
)

_KINDS = {"CLIENT": 3, "SERVER": 2, "PRODUCER": 4, "CONSUMER": 5}
_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}
_RESOURCE_PREFIXES = (
    "service.",
    "telemetry.",
    "process.",
    "host.",
    "os.",
    "container.",
    "k8s.",
    "cloud.",
    "deployment.",
    "faas.",
    "device.",
    "webengine.",
    "thread.type",
)
_SPAN_THREAD_KEYS = ("thread.id", "thread.name")
#: Tags the exporters made from fields OTLP has: they become those fields again.
_MAPPED = OTEL_FIELD_TAGS
_ZERO = "0" * 16


def _is_resource(key: str) -> bool:
    return key.startswith(_RESOURCE_PREFIXES) and key not in _SPAN_THREAD_KEYS


def _number(text: str) -> Any:
    """A tag written from an integer (``process.pid``, ``thread.id``) as the integer again."""
    if text.lstrip("-").isdigit() and len(text) < 19:
        return int(text)
    return text


def _span(span: Any, where: str) -> tuple[tuple[tuple[str, Any], ...], dict[str, Any]]:
    """The span's resource (as sorted attribute pairs) and its OTLP/JSON form."""
    expect(span, dict, where, "a Zipkin span object")
    trace = hex_id(span.get("traceId"), 32, f"{where}.traceId", "a trace id")
    out: dict[str, Any] = {
        "traceId": trace,
        "spanId": hex_id(span.get("id"), 16, f"{where}.id", "a span id"),
        "name": expect(span.get("name", ""), str, f"{where}.name", "a string"),
    }
    parent = span.get("parentId")
    if parent not in (None, ""):
        parent = hex_id(parent, 16, f"{where}.parentId", "a span id")
        if parent != _ZERO:
            out["parentSpanId"] = parent
    if "timestamp" not in span:
        raise ShapeError(f"{where}.timestamp", "expected the start in microseconds (the span has none)")
    start = micros(span["timestamp"], f"{where}.timestamp")
    out["startTimeUnixNano"] = start * 1000
    out["endTimeUnixNano"] = (start + micros(span.get("duration", 0), f"{where}.duration")) * 1000
    kind = span.get("kind")
    if kind is None:
        out["kind"] = 1
    elif kind in _KINDS:
        out["kind"] = _KINDS[kind]
    else:
        raise ShapeError(f"{where}.kind", f"expected CLIENT, SERVER, PRODUCER or CONSUMER, got {kind!r}")
    endpoint = expect(span.get("localEndpoint") or {}, dict, f"{where}.localEndpoint", "an endpoint object")
    service = expect(endpoint.get("serviceName") or "", str, f"{where}.localEndpoint.serviceName", "a string")
    resource: list[tuple[str, Any]] = [("service.name", service)] if service else []
    attrs = []
    tags = expect(span.get("tags") or {}, dict, f"{where}.tags", "an object of string tags")
    for key, value in tags.items():
        if not isinstance(value, str):
            raise ShapeError(f"{where}.tags.{key}", f"expected a string, got {json_type(value)}")
        if key in _MAPPED or key == "service.name":
            continue
        if _is_resource(key):
            resource.append((key, _number(value)))
        else:
            attrs.append(attribute(key, _number(value) if key in _SPAN_THREAD_KEYS else value))
    if attrs:
        out["attributes"] = attrs
    status = tags.get("otel.status_code")
    code = _STATUS.get(str(status).upper(), 0) if status is not None else (2 if "error" in tags else 0)
    if code:
        out["status"] = {"code": code, "message": tags.get("otel.status_description", tags.get("error", ""))}
    return tuple(sorted(resource)), out


def spans_request(spans: Any, where: str = "") -> dict[str, Any] | None:
    """One Zipkin array as an OTLP/JSON request (None when it holds no spans). Raises
    ``ShapeError``."""
    expect(spans, list, where or "(document)", "a JSON array of Zipkin v2 spans")
    by_resource: dict[tuple[tuple[str, Any], ...], list[dict[str, Any]]] = {}
    for i, raw in enumerate(spans):
        resource, span = _span(raw, f"{where}[{i}]")
        by_resource.setdefault(resource, []).append(span)
    if not by_resource:
        return None
    return {
        "resourceSpans": [
            {"resource": {"attributes": [attribute(k, v) for k, v in resource]}, "scopeSpans": [{"spans": spans}]}
            for resource, spans in by_resource.items()
        ]
    }


class ZipkinReader(DocumentReader):
    name = "zipkin"
    title = "Zipkin v2 JSON"

    def sniff(self, head: bytes) -> bool:
        return head.lstrip()[:1] == b"["

    def requests(self, doc: Any, memo: dict[Any, Any]) -> Iterator[dict[str, Any]]:
        # ``/api/v2/traces`` answers with an array of traces, each an array of spans.
        traces = doc if isinstance(doc, list) and doc and all(isinstance(t, list) for t in doc) else [doc]
        for i, trace in enumerate(traces):
            req = spans_request(trace, f"[{i}]" if traces is doc else "")
            if req is not None:
                yield req
