"""What the readers of other systems' JSON (Jaeger, Zipkin, Tempo) share.

Each of them turns one JSON document into OTLP/JSON ``ExportTraceServiceRequest`` dicts, and
this module does the rest once: it splits a file into its documents (one, JSON lines, or
several pretty-printed ones back to back), hands the requests to the OTLP/JSON reader's span
builder, so that resources, thread units, kinds and statuses mean exactly what they mean in an
OTLP dump, and writes them out for ``ctxdoctor convert``. Going through OTLP/JSON costs a second
decode per span; these files come from a UI or a query API (thousands of spans, not millions),
and one mapping for reading and converting means the two can never disagree.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from ctxdoctor.errors import InputError
from ctxdoctor.readers.interface import ReadWarning, SpanSink
from ctxdoctor.readers.otlp_json import OtlpJsonReader, ResourceCache, decode_request
from ctxdoctor.units import UnitTable

_TRAILING = "trailing characters"
#: Tags OpenTelemetry's Jaeger and Zipkin exporters make from fields OTLP has (status, scope):
#: both readers turn them back into those fields instead of attributes.
OTEL_FIELD_TAGS = frozenset(
    {
        "otel.status_code",
        "otel.status_description",
        "otel.scope.name",
        "otel.library.name",
        "otel.scope.version",
        "otel.library.version",
    }
)
_HEX = re.compile(r"[0-9a-fA-F]+").fullmatch


class ShapeError(ValueError):
    """A document is JSON but not in the shape its format promises: ``where`` is a path in it
    (``data[0].spans[3].startTime``), the message says what was expected there."""

    def __init__(self, where: str, expected: str) -> None:
        super().__init__(f"{where}: {expected}" if where else expected)


class AnswerError(ValueError):
    """The document is an error answer of the system's API (a trace not found, say), not traces."""


def documents(path: str, data: bytes) -> Iterator[tuple[int, Any]]:
    """Each JSON document in ``data`` with the line it starts on: one document, JSON lines, or
    several documents back to back."""
    try:
        yield 1, msgspec.json.decode(data)
        return
    except msgspec.DecodeError as exc:
        if _TRAILING not in str(exc):
            raise InputError(path, f"malformed JSON: {exc}", line=_line(data, exc)) from None
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    text = data.decode("utf-8")
    decoder = json.JSONDecoder()
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        if pos >= end:
            return
        line = text.count("\n", 0, pos) + 1
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"malformed JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
        yield line, doc


def _line(data: bytes, exc: msgspec.DecodeError) -> int | None:
    m = re.search(r"byte (\d+)", str(exc))
    if m:
        return data.count(b"\n", 0, int(m.group(1))) + 1
    # Truncated: the document ends early, on the file's last line.
    return data.rstrip().count(b"\n") + 1 if "truncated" in str(exc) else None


def attribute(key: str, value: Any) -> dict[str, Any]:
    """An OTLP/JSON ``KeyValue`` for a plain JSON value."""
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": value}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value if isinstance(value, str) else json.dumps(value)}}


def hex_id(value: Any, digits: int, where: str, what: str) -> str:
    """An id written as hex, perhaps without its leading zeros (Jaeger, Zipkin), as the OTLP/JSON
    ``digits`` hex digits."""
    if type(value) is not str or len(value) > digits or not _HEX(value):
        raise ShapeError(where, f"expected {what} as up to {digits} hex digits, got {_show(value)}")
    return value if len(value) == digits and value.islower() else value.lower().rjust(digits, "0")


def micros(value: Any, where: str) -> int:
    """A time or duration in microseconds, as an integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ShapeError(where, f"expected microseconds as a non-negative integer, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    """``value`` when it is a ``kind``. The error names the JSON type found, never the value: it
    may be an attribute, and attribute values can be secrets."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ShapeError(where, f"expected {what}, got {json_type(value)}")
    return value


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


class DocumentReader:
    """A reader of whole JSON documents that map to OTLP requests; subclasses say how."""

    name = "documents"
    #: What the format is called in messages.
    title = "JSON"

    def sniff(self, head: bytes) -> bool:
        raise NotImplementedError

    def requests(self, doc: Any, memo: dict[Any, Any]) -> Iterator[dict[str, Any]]:
        """The OTLP/JSON requests one document holds. Raises ``ShapeError``. ``memo`` lives as
        long as the file: what its documents repeat (resources) can be built once."""
        raise NotImplementedError

    def file_requests(self, path: str, data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
        """Every request of a file, with the line its document starts on."""
        memo: dict[Any, Any] = {}
        for line, doc in documents(path, data):
            try:
                for req in self.requests(doc, memo):
                    yield line, req
            except ShapeError as exc:
                raise InputError(path, f"not {self.title}: {exc}", line=line) from None
            except AnswerError as exc:
                raise InputError(
                    path, f"{self.title} that holds an error answer, not traces: {exc}", line=line
                ) from None

    def read(
        self,
        path: str,
        stream: BinaryIO,
        units: UnitTable,
        emit: SpanSink,
        warn: Callable[[ReadWarning], None],
        *,
        at_start: bool = True,
        at_end: bool = True,
        values: bool = False,
    ) -> None:
        resources = ResourceCache(units, values)
        count = 0

        def counted(span: Any) -> None:
            nonlocal count
            count += 1
            emit(span)

        for line, req in self.file_requests(path, stream.read()):
            OtlpJsonReader._emit(path, line, decode_request(msgspec.json.encode(req)), resources, counted, warn)
        if count == 0:
            warn(ReadWarning(path, f"{self.title} with no spans in it"))

    def boundary(self, file: BinaryIO, offset: int) -> int | None:
        return None  # a document is read whole


def write_otlp_json(reader: DocumentReader, source: Path, target: Path) -> tuple[int, int]:
    """``source`` as OTLP/JSON lines, one request per line. Returns (requests, spans)."""
    try:
        data = source.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise InputError(source, f"cannot read: {exc}") from None
    lines = []
    spans = 0
    for _, req in reader.file_requests(str(source), data):
        spans += sum(len(ss["spans"]) for rs in req["resourceSpans"] for ss in rs.get("scopeSpans", ()))
        lines.append(msgspec.json.encode(req) + b"\n")
    with target.open("wb") as out:
        out.writelines(lines)
    return len(lines), spans
