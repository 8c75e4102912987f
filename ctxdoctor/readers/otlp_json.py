"""OTLP/JSON: the Collector file exporter's JSON-lines format (one request per line), or one
pretty-printed document.

Decoded with msgspec into wire structs that name only the fields the analysis uses, so
everything else in a line is skipped without allocating. Ids are hex per the OTLP/JSON spec
(never base64). The Collector's leniency is kept: int64 as strings or numbers, enum names,
empty ids, and snake_case keys (the latter through a slower normalising path).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec

from ctxdoctor.errors import InputError
from ctxdoctor.model import Span, SpanKind, Unit
from ctxdoctor.readers.interface import MAX_VALUE_CHARS, ReadWarning, SpanSink
from ctxdoctor.readers.sniffing import OTLP_KEYS, first_key
from ctxdoctor.units import RESOURCE_KEYS, SPAN_THREAD_KEYS, Scalar, UnitTable


# Wire structs name only what the analysis reads; msgspec skips everything else without
# allocating. gc=False: they hold no cycles, and millions of tracked objects make the cyclic
# collector run over and over during a load.
class _KV(msgspec.Struct, gc=False):
    key: str = ""
    value: msgspec.Raw = msgspec.Raw(b"{}")


class _AnyValue(msgspec.Struct, gc=False):
    stringValue: str | None = None
    intValue: int | None = None
    boolValue: bool | None = None
    doubleValue: float | str | None = None


class _ValueKV(msgspec.Struct, gc=False):
    key: str = ""
    value: _AnyValue | None = None


class _Resource(msgspec.Struct, gc=False):
    attributes: list[_KV] = []


class _Link(msgspec.Struct, gc=False):
    traceId: str = ""


class _Span(msgspec.Struct, gc=False):
    traceId: str = ""
    spanId: str = ""
    parentSpanId: str = ""
    name: str = ""
    kind: int | str = 0
    startTimeUnixNano: int = 0
    endTimeUnixNano: int = 0
    flags: int = 0
    # Kept raw: most spans carry attributes, few name their thread; parsed only when they do.
    attributes: msgspec.Raw = msgspec.Raw(b"[]")
    links: msgspec.Raw = msgspec.Raw(b"[]")
    status: msgspec.Raw = msgspec.Raw(b"{}")  # almost always {}: decoded only when it is not


class _Status(msgspec.Struct, gc=False):
    code: int | str = 0


class _ScopeSpans(msgspec.Struct, gc=False):
    spans: list[_Span] = []


class _ResourceSpans(msgspec.Struct, gc=False):
    resource: msgspec.Raw = msgspec.Raw(b"{}")
    scopeSpans: list[_ScopeSpans] = []
    instrumentationLibrarySpans: list[_ScopeSpans] = []  # OTLP < 0.15, still seen in old dumps


class _Request(msgspec.Struct, gc=False):
    resourceSpans: list[_ResourceSpans] = []


_decoder = msgspec.json.Decoder(_Request, strict=False)
_value_decoder = msgspec.json.Decoder(_AnyValue, strict=False)
_resource_decoder = msgspec.json.Decoder(_Resource, strict=False)
_attrs_decoder = msgspec.json.Decoder(list[_KV], strict=False)
_values_decoder = msgspec.json.Decoder(list[_ValueKV], strict=False)
_links_decoder = msgspec.json.Decoder(list[_Link], strict=False)
_status_decoder = msgspec.json.Decoder(_Status, strict=False)
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2, "UNSET": 0, "OK": 1, "ERROR": 2}
_THREAD_MARK = b'"thread.'
_has_thread_mark = re.compile(re.escape(_THREAD_MARK)).search
_NO_ITEMS = (b"[]", b"")
#: One object per flags value below 1024 (the defined bits; 0x101 and 0x301 are not among
#: CPython's cached small ints), so a million spans do not carry a million copies.
_FLAGS_SEEN: dict[int, int] = {}
_SNAKE_MARKERS = (b'"resource_spans"', b'"scope_spans"', b'"trace_id"', b'"span_id"')
_KIND_NAMES = {k.name: int(k) for k in SpanKind} | {f"SPAN_KIND_{k.name}": int(k) for k in SpanKind}
_HEX = re.compile(r"[0-9a-fA-F]*")
_FIRST_KEYS = OTLP_KEYS | {None}


class SpanError(ValueError):
    """One span's fields are malformed: the file is not valid OTLP/JSON."""


class EmptyId(ValueError):
    """An empty id: the Collector accepts and drops such spans, and so do we (with a warning)."""


def _scalar(raw: msgspec.Raw) -> Scalar:
    v = _value_decoder.decode(raw)
    if v.stringValue is not None:
        return v.stringValue
    if v.intValue is not None:
        return v.intValue
    if v.boolValue is not None:
        return v.boolValue
    if isinstance(v.doubleValue, float):
        return v.doubleValue
    return None


def parse_id(text: str, digits: int, field: str) -> int:
    """Hex id to int; 0 for empty. Explains the common base64 mistake."""
    if not text:
        return 0
    if len(text) == digits:
        try:
            value = int(text, 16)
        except ValueError:
            pass
        else:
            if text.isalnum():  # int() would also take "0x", "_" and signs
                return value
    hint = " (OTLP/JSON ids are hex, not base64)" if len(text) in (24, 12) or "=" in text else ""
    raise SpanError(f"{field} {text!r} is not {digits} hex digits{hint}")


def _enum(value: int | str, names: dict[str, int], field: str) -> int:
    if isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    try:
        return names[value.upper()]
    except KeyError:
        raise SpanError(f"{field} {value!r} is not a known enum name") from None


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _camelise(obj: Any) -> Any:
    """snake_case keys to lowerCamelCase, leaving attribute *values* (user data) alone."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            ck = _camel(k) if "_" in k else k
            out[ck] = v if ck == "key" else _camelise(v)
        return out
    if isinstance(obj, list):
        return [_camelise(v) for v in obj]
    return obj


def decode_request(data: bytes) -> _Request:
    """Decode one OTLP/JSON ``ExportTraceServiceRequest``/``TracesData``.

    camelCase first; only a request that yields no spans is looked at again for snake_case
    keys (scanning every line for them would cost more than decoding it).
    """
    req = _decoder.decode(data)
    if not _has_spans(req) and any(m in data for m in _SNAKE_MARKERS):
        req = _decoder.decode(msgspec.json.encode(_camelise(msgspec.json.decode(data))))
    return req


def _has_spans(req: _Request) -> bool:
    return any(ss.spans for rs in req.resourceSpans for ss in (rs.scopeSpans or rs.instrumentationLibrarySpans))


class ResourceCache:
    """Units of the resources seen so far, by their raw JSON: a resource repeats on every batch."""

    __slots__ = ("by_raw", "names", "threads", "units", "values")

    def __init__(self, units: UnitTable, values: bool = False):
        self.units = units
        self.by_raw: dict[bytes, Unit] = {}
        self.names: dict[str, str] = {}  # one string object per span name in the file
        self.threads: dict[tuple[int | bytes, ...], Unit] = {}  # see _thread_unit
        #: One string object per attribute key and value, when spans keep their values.
        self.values: dict[str, str] | None = {} if values else None

    def unit(self, raw: msgspec.Raw) -> Unit:
        key = bytes(raw)
        unit = self.by_raw.get(key)
        if unit is None:
            attrs = _resource_decoder.decode(raw).attributes if key not in (b"{}", b"null") else []
            ident = tuple((kv.key, bytes(kv.value)) for kv in attrs)
            wanted = {kv.key: _scalar(kv.value) for kv in attrs if kv.key in RESOURCE_KEYS}
            unit = self.by_raw[key] = self.units.resource_unit(ident, wanted)
        return unit


#: A thread attribute as the Collector and the SDK exporters write it (compact, key first, a
#: string or an int64 as a string or a number). Anything else takes the full decode.
_THREAD_ATTR = re.compile(
    rb'\{"key":"(thread\.id|thread\.name)","value":\{"(?:stringValue|intValue)":("[^"\\]*"|-?\d+)\}\}'
)


def _thread_unit(base: Unit, raw: bytes, units: UnitTable, seen: dict[tuple[int | bytes, ...], Unit]) -> Unit:
    """The unit a span's thread attributes name. Every span of a threaded service has them, so
    the common shape is matched in the raw text and its unit remembered (by what matched):
    decoding each span's attribute list would cost more than the rest of the span."""
    found = _THREAD_ATTR.findall(raw)
    if found and len(found) == raw.count(_THREAD_MARK):
        key = (base.resource, *(b for pair in found for b in pair))
        unit = seen.get(key)
        if unit is None:
            unit = seen[key] = _decoded_thread_unit(base, raw, units)
        return unit
    return _decoded_thread_unit(base, raw, units)


def span_values(raw: msgspec.Raw | bytes, seen: dict[str, str]) -> tuple[str, ...]:
    """A span's string and integer attributes, flattened (key, value, ...); ``seen`` interns them."""
    out: list[str] = []
    for kv in _values_decoder.decode(raw):
        v = kv.value
        if v is None:
            continue
        if v.stringValue is not None:
            text = v.stringValue
            if not text or len(text) > MAX_VALUE_CHARS:
                continue
        elif v.intValue is not None:
            text = str(v.intValue)
        else:
            continue
        out += (seen.setdefault(kv.key, kv.key), seen.setdefault(text, text))
    return tuple(out)


def _decoded_thread_unit(base: Unit, raw: bytes, units: UnitTable) -> Unit:
    tid = tname = None
    for kv in _attrs_decoder.decode(raw):
        if kv.key in SPAN_THREAD_KEYS:
            if kv.key == "thread.id":
                tid = _scalar(kv.value)
            else:
                tname = _scalar(kv.value)
    return units.thread_unit(base, tid, tname)


def request_spans(
    req: _Request,
    resources: ResourceCache,
    emit: SpanSink,
    on_bad_span: Callable[[str], None],
    threads_named: bool = True,
) -> int:
    """Turn a decoded request into ``Span`` records. Returns how many were emitted.

    ``threads_named=False`` says the request's text never mentions ``"thread.``, so no span
    attributes need a look.
    """
    count = 0
    names = resources.names
    # Spans of one trace share one id object: most of a batch belongs to a few traces. Likewise a
    # span id and the parent ids naming it within a batch (siblings, and a parent exported with its
    # children): 40 bytes per span that names a parent already named.
    trace_ids: dict[str, int] = {}
    span_ids: dict[str, int] = {}
    flags_seen = _FLAGS_SEEN
    units = resources.units
    thread_units = resources.threads
    seen_values = resources.values
    for ri, rs in enumerate(req.resourceSpans):
        base = resources.unit(rs.resource)
        scopes = rs.scopeSpans or rs.instrumentationLibrarySpans
        for si, ss in enumerate(scopes):
            for ki, s in enumerate(ss.spans):
                try:
                    t_hex, s_hex, p_hex = s.traceId, s.spanId, s.parentSpanId
                    try:  # the common, well-formed case without a function call per id
                        if len(t_hex) != 32 or len(s_hex) != 16 or (p_hex and len(p_hex) != 16):
                            raise ValueError
                        trace_id = trace_ids.get(t_hex) or trace_ids.setdefault(t_hex, int(t_hex, 16))
                        span_id = span_ids.get(s_hex) or span_ids.setdefault(s_hex, int(s_hex, 16))
                        parent = (span_ids.get(p_hex) or span_ids.setdefault(p_hex, int(p_hex, 16))) if p_hex else 0
                    except ValueError:  # say exactly what is wrong
                        trace_id = parse_id(t_hex, 32, "traceId")
                        span_id = parse_id(s_hex, 16, "spanId")
                        parent = parse_id(p_hex, 16, "parentSpanId")
                    if not trace_id or not span_id:
                        raise EmptyId("span has an empty or all-zero traceId/spanId")
                    kind = s.kind if type(s.kind) is int else _enum(s.kind, _KIND_NAMES, "kind")
                    status = 0
                    if len(s.status) > 2:
                        code = _status_decoder.decode(s.status).code
                        status = code if type(code) is int else _enum(code, _STATUS_NAMES, "status.code")
                except EmptyId as exc:
                    on_bad_span(f"span {s.name!r} skipped: {exc}")
                    continue
                except SpanError as exc:
                    where = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{ki}] ({s.name!r})"
                    raise SpanError(f"{where}: {exc}") from None
                unit = base
                if threads_named and _has_thread_mark(s.attributes):  # searched in place: no copy
                    unit = _thread_unit(base, bytes(s.attributes), units, thread_units)
                links: tuple[int, ...] = ()
                if len(s.links) > 2 and bytes(s.links) not in _NO_ITEMS:
                    links = tuple(
                        int(lk.traceId, 16)
                        for lk in _links_decoder.decode(s.links)
                        if lk.traceId and _HEX.fullmatch(lk.traceId)
                    )
                name = names.setdefault(s.name, s.name)
                values: tuple[str, ...] = ()
                if seen_values is not None and len(s.attributes) > 2:
                    values = span_values(s.attributes, seen_values)
                emit(
                    Span(
                        trace_id,
                        span_id,
                        parent,
                        name,
                        kind,
                        s.startTimeUnixNano,
                        s.endTimeUnixNano,
                        flags_seen.setdefault(s.flags, s.flags) if s.flags < 1024 else s.flags,
                        unit,
                        links,
                        status,
                        values,
                    )
                )
                count += 1
    return count


#: The longest line (or pretty-printed document) read. The Collector writes one request per line
#: and the OTLP limit on a request is 64 MiB of protobuf, about 200 MiB as JSON.
MAX_LINE_BYTES = 256 << 20
#: What is said of JSON nested deeper than the decoder goes (msgspec stops before Python's stack).
_TOO_DEEP = "not an OTLP/JSON ExportTraceServiceRequest: JSON nested too deeply (an attribute value, probably)"


def _too_long(limit: int) -> str:
    return (
        f"line is longer than {limit >> 20} MiB: not a Collector JSON line (one request per line, "
        "at most 64 MiB of protobuf); the file may be corrupt, or one request was not split"
    )


def _describe(exc: msgspec.DecodeError) -> str:
    msg = str(exc)
    if msg.startswith("Expected"):
        return f"not an OTLP/JSON ExportTraceServiceRequest: {msg}"
    return f"malformed JSON: {msg}"


def _line_of(data: bytes, exc: msgspec.DecodeError) -> int | None:
    m = re.search(r"byte (\d+)", str(exc))
    return data.count(b"\n", 0, int(m.group(1))) + 1 if m else None


class OtlpJsonReader:
    name = "otlp-json"

    def sniff(self, head: bytes) -> bool:
        # Other systems' JSON documents are objects too: only OTLP's own first key (or none in
        # sight, or ``{}``) is taken, so that they are never read as an empty dump.
        return head.lstrip()[:1] in (b"{", b"") and first_key(head) in _FIRST_KEYS

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
    ) -> int:
        """Counts the spans itself, so that a caller that must know whether a file yielded any
        need not wrap ``emit`` (a call more per span)."""
        resources = ResourceCache(units, values)
        count = 0
        lineno = 0
        # Past the file's first line, a bad line can no longer be the head of a pretty document.
        decoded_any = not at_start
        pending: tuple[int, bytes, msgspec.DecodeError] | None = None
        max_line = MAX_LINE_BYTES
        # Lines are read with a limit: one line inflating to gigabytes (a small gzip can) would
        # otherwise be held whole, and then decoded, before anything could refuse it.
        for line in iter(lambda: stream.readline(max_line + 1), b""):
            lineno += 1
            # msgspec takes the line with its newline; stripping would copy every ~400 kB line.
            if len(line) < 4 and not line.strip():
                continue
            if pending is not None:
                # The earlier bad line was not the last one: a real error, unless the file is
                # one pretty-printed document, which only shows when its first line fails.
                bad_no, bad_line, exc = pending
                if not decoded_any:
                    rest = bad_line + line + stream.read(max_line + 1 - len(bad_line) - len(line))
                    if len(rest) > max_line:
                        raise InputError(path, _too_long(max_line) + " (one JSON document)", line=bad_no)
                    return count + self._read_document(path, rest, bad_no, resources, emit, warn)
                raise InputError(path, _describe(exc), line=bad_no)
            if len(line) > max_line and not line.endswith(b"\n"):
                raise InputError(path, _too_long(max_line), line=lineno)
            try:
                req = decode_request(line)
            except RecursionError:
                raise InputError(path, _TOO_DEEP, line=lineno) from None
            except msgspec.ValidationError as err:
                # Complete JSON of the wrong shape: no later line can make it right.
                raise InputError(path, _describe(err), line=lineno) from None
            except UnicodeDecodeError as err:
                raise InputError(path, f"not UTF-8 text: {err.reason} at byte {err.start}", line=lineno) from None
            except msgspec.DecodeError as err:
                pending = (lineno, line, err)
                continue
            decoded_any = True
            count += self._emit(path, lineno, req, resources, emit, warn, _THREAD_MARK in line)
        if pending is not None:
            bad_no, bad_line, exc = pending
            if at_end and "truncated" in str(exc):
                warn(
                    ReadWarning(
                        path,
                        f"last line is truncated ({len(bad_line)} bytes; the writer was probably "
                        "stopped mid-write); everything before it was read",
                        line=bad_no,
                    )
                )
            else:
                raise InputError(path, _describe(exc), line=bad_no)
        return count

    def boundary(self, file: BinaryIO, offset: int) -> int | None:
        """The start of the first line at or after ``offset``, if the file is JSON lines (its first
        line is a whole request; a pretty-printed document cannot be cut)."""
        file.seek(0)
        try:
            decode_request(file.readline(MAX_LINE_BYTES))
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None
        if offset <= 0:
            return 0
        file.seek(offset - 1)
        file.readline()
        return file.tell()

    def _read_document(
        self,
        path: str,
        data: bytes,
        first_line: int,
        resources: ResourceCache,
        emit: SpanSink,
        warn: Callable[[ReadWarning], None],
    ) -> int:
        try:
            req = decode_request(data)
        except RecursionError:
            raise InputError(path, _TOO_DEEP, line=first_line) from None
        except msgspec.DecodeError as exc:
            line = _line_of(data, exc)
            raise InputError(path, _describe(exc), line=None if line is None else first_line + line - 1) from None
        except UnicodeDecodeError as exc:
            raise InputError(path, f"not UTF-8 text: {exc.reason} at byte {exc.start}", line=first_line) from None
        return self._emit(path, first_line, req, resources, emit, warn)

    @staticmethod
    def _emit(
        path: str,
        lineno: int,
        req: _Request,
        resources: ResourceCache,
        emit: SpanSink,
        warn: Callable[[ReadWarning], None],
        threads_named: bool = True,
    ) -> int:
        try:
            return request_spans(req, resources, emit, lambda m: warn(ReadWarning(path, m, line=lineno)), threads_named)
        except SpanError as exc:
            raise InputError(path, str(exc), line=lineno) from None
        except RecursionError:
            raise InputError(path, _TOO_DEEP, line=lineno) from None
        except msgspec.DecodeError as exc:  # a resource, attributes, links or status decoded lazily
            raise InputError(path, _describe(exc), line=lineno) from None
        except UnicodeDecodeError as exc:
            raise InputError(path, f"not UTF-8 text: {exc.reason}", line=lineno) from None
