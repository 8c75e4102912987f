"""Jaeger JSON: what the Jaeger UI's "Trace JSON" (and "unadjusted") and the query API
(``/api/traces/{id}``, ``/api/traces?service=...``, ``?raw=true``) give.

``{"data": [trace, ...]}`` (or a bare trace), each trace ``{"traceID", "spans": [...],
"processes": {id: {"serviceName", "tags"}}}``. A process is what OTLP calls a resource, so its
tags become resource attributes and ``serviceName`` is ``service.name``. The tags Jaeger's OTLP
translation adds (``span.kind``, ``otel.status_code``, ``otel.scope.name``...) become the kind,
status and scope again, a ``CHILD_OF`` reference in the same trace is the parent, and any other
reference (``FOLLOWS_FROM``) a link. Times are microseconds. Jaeger v1 writes ids as hex without
leading zeros (a 64-bit trace id as 16 digits or fewer), so ids are read as numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from ctxdoctor.readers.documents import (
    OTEL_FIELD_TAGS,
    AnswerError,
    DocumentReader,
    ShapeError,
    attribute,
    expect,
    hex_id,
    micros,
)
from ctxdoctor.readers.sniffing import first_key

#: The first key of a query API answer (Go writes ``data`` first; ``jq -S`` sorts the envelope's
#: other keys before it), or of a bare trace.
_KEYS = frozenset({"data", "errors", "limit", "offset", "total", "traceID", "spans", "processes"})
_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}
#: Tags that Jaeger's OTLP translation made from fields OTLP has: they become those fields again.
_MAPPED = OTEL_FIELD_TAGS | {"span.kind", "internal.span.format"}
_ZERO = "0" * 16


def _value(tag: dict[str, Any], where: str) -> Any:
    value = tag.get("value")
    kind = tag.get("type", "string")
    if kind == "int64":
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        return expect(value, int, where, "an int64 tag value")
    if kind == "float64":
        return float(expect(value, (int, float), where, "a float64 tag value"))
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    return value if isinstance(value, str) else str(value)


def _tags(tags: Any, where: str) -> Iterator[tuple[str, Any]]:
    for i, tag in enumerate(expect(tags or [], list, where, "a list of tags")):
        at = f"{where}[{i}]"
        expect(tag, dict, at, 'a tag {"key", "type", "value"}')
        yield expect(tag.get("key"), str, f"{at}.key", "a string"), _value(tag, f"{at}.value")


def _resource(process: Any, where: str) -> dict[str, Any]:
    expect(process, dict, where, 'a process {"serviceName", "tags"}')
    service = expect(process.get("serviceName", ""), str, f"{where}.serviceName", "a string")
    attrs = [attribute("service.name", service)]
    attrs += [attribute(k, v) for k, v in _tags(process.get("tags"), f"{where}.tags") if k != "service.name"]
    return {"attributes": attrs}


def _span(span: Any, where: str) -> tuple[dict[str, Any], Any]:
    """The OTLP/JSON span and the key of its process."""
    expect(span, dict, where, "a span object")
    trace = hex_id(span.get("traceID"), 32, f"{where}.traceID", "a trace id")
    out: dict[str, Any] = {
        "traceId": trace,
        "spanId": hex_id(span.get("spanID"), 16, f"{where}.spanID", "a span id"),
        "name": expect(span.get("operationName", ""), str, f"{where}.operationName", "a string"),
    }
    start = micros(span.get("startTime"), f"{where}.startTime")
    out["startTimeUnixNano"] = start * 1000
    out["endTimeUnixNano"] = (start + micros(span.get("duration", 0), f"{where}.duration")) * 1000
    parent = ""
    links = []
    for i, ref in enumerate(expect(span.get("references") or [], list, f"{where}.references", "a list")):
        at = f"{where}.references[{i}]"
        expect(ref, dict, at, 'a reference {"refType", "traceID", "spanID"}')
        ref_trace = hex_id(ref.get("traceID"), 32, f"{at}.traceID", "a trace id")
        ref_span = hex_id(ref.get("spanID"), 16, f"{at}.spanID", "a span id")
        ref_type = ref.get("refType", "CHILD_OF")
        if ref_type not in ("CHILD_OF", "FOLLOWS_FROM"):
            raise ShapeError(f"{at}.refType", f"expected CHILD_OF or FOLLOWS_FROM, got {ref_type!r}")
        if ref_type == "CHILD_OF" and not parent and ref_trace == trace:
            parent = ref_span
        else:
            links.append({"traceId": ref_trace, "spanId": ref_span})
    if not parent and span.get("parentSpanID") not in (None, "", "0"):  # the UI's older shape
        parent = hex_id(span["parentSpanID"], 16, f"{where}.parentSpanID", "a span id")
    if parent and parent != _ZERO:
        out["parentSpanId"] = parent
    if links:
        out["links"] = links
    attrs = []
    tags = dict(_tags(span.get("tags"), f"{where}.tags"))
    for key, value in tags.items():
        if key not in _MAPPED:
            attrs.append(attribute(key, value))
    if attrs:
        out["attributes"] = attrs
    kind = tags.get("span.kind")
    out["kind"] = _KINDS.get(str(kind).lower(), 0) if kind is not None else 0
    status = tags.get("otel.status_code")
    code = _STATUS.get(str(status).upper(), 0) if status is not None else (2 if tags.get("error") is True else 0)
    if code:
        out["status"] = {"code": code, "message": str(tags.get("otel.status_description", ""))}
    return out, span.get("processID") if "process" not in span else ("inline", id(span))


class JaegerReader(DocumentReader):
    name = "jaeger"
    title = "Jaeger JSON"

    def sniff(self, head: bytes) -> bool:
        return first_key(head) in _KEYS

    def requests(self, doc: Any, memo: dict[Any, Any]) -> Iterator[dict[str, Any]]:
        expect(doc, dict, "", 'a Jaeger answer {"data": [...]} or a trace {"traceID", "spans", "processes"}')
        if "spans" in doc and "data" not in doc:
            yield from self._trace(doc, "", memo)
            return
        errors = doc.get("errors")
        data = doc.get("data")
        if errors and not data:
            first = errors[0] if isinstance(errors, list) and errors else errors
            msg = first.get("msg", first) if isinstance(first, dict) else first
            code = f" ({first['code']})" if isinstance(first, dict) and "code" in first else ""
            raise AnswerError(f"{msg}{code}")
        for i, trace in enumerate(expect(data or [], list, "data", "a list of traces")):
            yield from self._trace(trace, f"data[{i}]", memo)

    def _trace(self, trace: Any, where: str, known: dict[bytes, dict[str, Any]]) -> Iterator[dict[str, Any]]:
        expect(trace, dict, where or "(document)", 'a trace {"traceID", "spans", "processes"}')
        # Every trace of an answer lists its processes again: each distinct one is built once.
        processes = expect(trace.get("processes") or {}, dict, f"{where}.processes", "an object of processes")
        by_process: dict[Any, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        at = f"{where}.spans" if where else "spans"
        for i, raw in enumerate(expect(trace.get("spans") or [], list, at, "a list of spans")):
            span, key = _span(raw, f"{at}[{i}]")
            entry = by_process.get(key)
            if entry is None:
                if isinstance(key, tuple):
                    resource = _resource(raw["process"], f"{at}[{i}].process")
                elif key in processes:
                    seen = msgspec.json.encode(processes[key])
                    resource = known.get(seen) or known.setdefault(
                        seen, _resource(processes[key], f"{where}.processes.{key}".lstrip("."))
                    )
                else:
                    raise ShapeError(
                        f"{at}[{i}].processID", f"expected the id of one of the trace's processes, got {key!r}"
                    )
                entry = by_process[key] = (resource, [])
            entry[1].append(span)
        if by_process:
            yield {
                "resourceSpans": [
                    {"resource": resource, "scopeSpans": [{"spans": spans}]} for resource, spans in by_process.values()
                ]
            }
