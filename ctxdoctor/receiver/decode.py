"""Request bodies -> protobuf ``ExportTraceServiceRequest``, with errors worded for the exporter.

OTLP/JSON ids are hex while ``json_format`` reads ``bytes`` as base64, so the JSON path rewrites
each id to base64 before handing the document to ``ParseDict`` (which then does the rest of the
proto3 mapping: camelCase or snake_case keys, int64 as strings or numbers, enums as integers or
names, unknown fields ignored, as the specification asks of receivers). A span whose ids are not
hex is dropped and counted, so it can be reported through ``partial_success`` while the rest of
the request is kept.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class BadRequest(ValueError):
    """The body is not an ``ExportTraceServiceRequest`` at all (gRPC INVALID_ARGUMENT, HTTP 400)."""


class _BadId(ValueError):
    pass


_NOT_A_REQUEST = "body is not an OTLP/JSON ExportTraceServiceRequest"
_TOO_DEEP = f"{_NOT_A_REQUEST}: JSON nested too deeply (an attribute value, probably)"
_AT_PATH = re.compile(r"at ExportTraceServiceRequest\.([A-Za-z0-9_\[\].]+)")
_FIELD = re.compile(r"Failed to parse ([A-Za-z0-9_]+) field")


def _where_parse_failed(message: str) -> str:
    """The field ``json_format`` could not parse, from its message, and nothing else of it: the
    message may quote the value, and values (attributes above all) can be secrets. Only field
    names, which are the schema's, are taken from it."""
    m = _AT_PATH.search(message)
    if m:
        return m.group(1).rstrip(".")
    return ".".join(_FIELD.findall(message)) or "a field"


def parse_protobuf(data: bytes) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(data)
    except DecodeError as exc:
        raise BadRequest(f"body is not a valid protobuf ExportTraceServiceRequest: {exc}") from None
    return req


_ID_KEYS = (("traceId", "trace_id"), ("spanId", "span_id"), ("parentSpanId", "parent_span_id"))


def _get(d: dict[str, Any], camel: str, snake: str) -> Any:
    v = d.get(camel)
    return d.get(snake) if v is None else v


def _hex_to_b64(d: dict[str, Any], camel: str, snake: str) -> None:
    for key in (camel, snake):
        text = d.get(key)
        if text is None:
            continue
        if not isinstance(text, str):
            raise _BadId(f"{camel} is {type(text).__name__}, not a hex string")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            hint = ""
            try:
                base64.b64decode(text, validate=True)
                hint = ", valid base64: OTLP/JSON ids are hex, not base64"
            except (binascii.Error, ValueError):
                pass
            # Its length, not its text: errors never repeat what a client sent.
            raise _BadId(f"{camel} is not hex ({len(text)} characters{hint})") from None
        d[key] = base64.b64encode(raw).decode("ascii")


def parse_json(data: bytes) -> tuple[ExportTraceServiceRequest, int, str]:
    """Parse OTLP/JSON. Returns the request, the number of spans dropped for unreadable ids and
    the first such problem."""
    try:
        doc = msgspec.json.decode(data)
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None  # position only, no text
    if not isinstance(doc, dict):
        raise BadRequest("body is not an OTLP/JSON ExportTraceServiceRequest (expected a JSON object)")
    rejected = 0
    first = ""
    try:
        for rs in _get(doc, "resourceSpans", "resource_spans") or ():
            for ss in _get(rs, "scopeSpans", "scope_spans") or ():
                spans = ss.get("spans")
                if not spans:
                    continue
                keep = []
                for sp in spans:
                    try:
                        for camel, snake in _ID_KEYS:
                            _hex_to_b64(sp, camel, snake)
                        for lk in sp.get("links") or ():
                            _hex_to_b64(lk, "traceId", "trace_id")
                            _hex_to_b64(lk, "spanId", "span_id")
                    except _BadId as exc:
                        rejected += 1
                        if not first:
                            first = f"span {str(sp.get('name'))[:80]!r}: {exc}"
                        continue
                    keep.append(sp)
                ss["spans"] = keep
    except (AttributeError, TypeError):
        raise BadRequest(
            f"{_NOT_A_REQUEST}: resourceSpans, scopeSpans, spans and links must be lists of objects"
        ) from None
    req = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
    except (json_format.ParseError, TypeError, ValueError) as exc:
        where = _where_parse_failed(str(exc))
        raise BadRequest(f"{_NOT_A_REQUEST}: {where} holds a value of the wrong type or form") from None
    return req, rejected, first
