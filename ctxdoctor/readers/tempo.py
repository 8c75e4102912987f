"""Grafana Tempo's trace-by-id answers: ``GET /api/traces/<id>`` (``{"batches": [...]}``) and
``GET /api/v2/traces/<id>`` (``{"trace": {"resourceSpans": [...]}}``).

Both are OTLP in protobuf's JSON mapping, which writes ``bytes`` as base64: a trace id is 24
base64 characters and a span id 12, where OTLP/JSON proper (and the Collector) writes 32 and 16
hex digits. The two lengths never overlap, and the document's shape says it came from Tempo, so
ids are read as base64 here, and as hex where they are hex. A Collector file
(``{"resourceSpans": ...}`` at the top) stays the OTLP/JSON reader's, which explains base64 ids
as the mistake they are there. Older Tempo versions write ``instrumentationLibrarySpans``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

from ctxdoctor.readers.documents import DocumentReader, ShapeError, expect
from ctxdoctor.readers.sniffing import first_key

_KEYS = frozenset({"batches", "trace"})
#: An id's size in bytes -> its length in base64 (padded).
_B64_LEN = {16: 24, 8: 12}
_HEX = frozenset("0123456789abcdefABCDEF")


def _id(value: Any, size: int, where: str) -> str:
    """A ``size``-byte id, given in base64 or in hex, as hex."""
    if value in (None, ""):
        return ""
    expect(value, str, where, "an id string")
    if len(value) == 2 * size and _HEX.issuperset(value):
        return value.lower()
    if len(value) == _B64_LEN[size]:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == size:
            return raw.hex()
    raise ShapeError(
        where, f"expected a {size}-byte id in base64 ({_B64_LEN[size]} characters) or hex, got {value[:40]!r}"
    )


def _resource_spans(doc: dict[str, Any]) -> tuple[str, Any]:
    if "batches" in doc:
        return "batches", doc["batches"]
    trace = expect(doc.get("trace") or {}, dict, "trace", 'an object {"resourceSpans": [...]}')
    return "trace.resourceSpans", trace.get("resourceSpans", trace.get("batches"))


class TempoReader(DocumentReader):
    name = "tempo"
    title = "Grafana Tempo JSON"

    def sniff(self, head: bytes) -> bool:
        return first_key(head) in _KEYS

    def requests(self, doc: Any, memo: dict[Any, Any]) -> Iterator[dict[str, Any]]:
        expect(doc, dict, "", 'a Tempo answer {"batches": [...]} or {"trace": {"resourceSpans": [...]}}')
        where, batches = _resource_spans(doc)
        out = []
        for i, rs in enumerate(expect(batches or [], list, where, "a list of resource spans")):
            at = f"{where}[{i}]"
            expect(rs, dict, at, 'a resource spans object {"resource", "scopeSpans"}')
            key = "scopeSpans" if "scopeSpans" in rs else "instrumentationLibrarySpans"
            scopes = []
            for j, ss in enumerate(expect(rs.get(key) or [], list, f"{at}.{key}", "a list")):
                expect(ss, dict, f"{at}.{key}[{j}]", 'an object {"spans": [...]}')
                spans = []
                for k, span in enumerate(expect(ss.get("spans") or [], list, f"{at}.{key}[{j}].spans", "a list")):
                    sat = f"{at}.{key}[{j}].spans[{k}]"
                    expect(span, dict, sat, "a span object")
                    span = dict(span)
                    span["traceId"] = _id(span.get("traceId"), 16, f"{sat}.traceId")
                    span["spanId"] = _id(span.get("spanId"), 8, f"{sat}.spanId")
                    span["parentSpanId"] = _id(span.get("parentSpanId"), 8, f"{sat}.parentSpanId")
                    links = []
                    for m, link in enumerate(expect(span.get("links") or [], list, f"{sat}.links", "a list")):
                        expect(link, dict, f"{sat}.links[{m}]", "a link object")
                        links.append(
                            dict(
                                link,
                                traceId=_id(link.get("traceId"), 16, f"{sat}.links[{m}].traceId"),
                                spanId=_id(link.get("spanId"), 8, f"{sat}.links[{m}].spanId"),
                            )
                        )
                    span["links"] = links
                    spans.append(span)
                scopes.append({"scope": ss.get("scope") or {}, "spans": spans})
            out.append({"resource": rs.get("resource") or {}, "scopeSpans": scopes})
        if out:
            yield {"resourceSpans": out}
