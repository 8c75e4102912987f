"""Telling formats apart by their first bytes, and naming what a file looks like when it is none
of them. Every format ctxdoctor reads except the Collector's proto is JSON, so the first key of
the top-level object (or an array) is what tells them apart, never the file's name."""

from __future__ import annotations

import re

_FIRST_KEY = re.compile(rb'\s*\{\s*"((?:[^"\\]|\\.)*)"\s*:')
#: The first key of an OTLP/JSON ``ExportTraceServiceRequest``/``TracesData``.
OTLP_KEYS = frozenset({"resourceSpans", "resource_spans"})


def first_key(head: bytes) -> str | None:
    """The first key of the JSON object ``head`` starts, or None when it is no object or the key
    is not within ``head``."""
    m = _FIRST_KEY.match(head)
    return m.group(1).decode("utf-8", "replace") if m else None


def looks_like(head: bytes) -> str:
    """What a stream that no reader takes seems to be, in a few words."""
    text = head.lstrip()
    key = first_key(head)
    if key is not None:
        return f"a JSON object whose first key is {key!r}"
    if text[:1] == b"{":
        return "a JSON object"
    if text[:1] == b"<":
        return "XML or HTML"
    if not text:
        return "blank"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in text[:64]):
        return f"text starting {text[:24].decode('ascii', 'replace')!r}"
    return f"binary data starting {text[:8].hex(' ')}"
