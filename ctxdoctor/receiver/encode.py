"""What the receiver does with spans: screen their ids at ingest, and encode them as OTLP/JSON later.

``screen_request`` runs on the receiver's request path, before the acknowledgement: it checks every
span's ids on the parsed (upb) request and removes the spans a dump could not identify, so that
they are rejected through ``partial_success`` rather than written.

``Transcoder`` runs in the converter process, off the request path: it turns each journal record
(a serialised request) into one strict OTLP/JSON line, straight from the protobuf wire bytes.

Why not walk upb messages: every field access on a parsed message is a C call that builds a
Python object, which made encoding cost ~28 µs per span, about 35 times what parsing costs. The
converter cannot keep up with a receiver that acknowledges hundreds of thousands of spans per
second at that price. Here each message's wire fields are read with a few byte-indexing steps,
and the parts of a request that repeat across spans in real traffic are transcoded once and then
looked up by their raw bytes: each ResourceSpans' Resource, each InstrumentationScope, each
attribute ``KeyValue`` (``http.request.method = GET`` is on thousands of spans), span names and
statuses. Ids, times and whatever else makes a span unique are never cached: whole spans do not
repeat in real traffic. Every cache is bounded by bytes (a few distinct 20 MiB attribute values
must not pin gigabytes) and cleared when it passes its bound, so memory stays flat however long
the converter runs and whatever the values are; a part too large to be worth keeping is not cached.

The output is what ``google.protobuf.json_format.MessageToDict(use_integers_for_enums=True)``
gives, serialised by msgspec, except that ids are hex as OTLP/JSON requires (and as the Collector's
file exporter writes them): lowerCamelCase keys in the ``.proto`` declaration order (so ``flags``
follows ``parentSpanId``), default values omitted, message fields present when set even if empty,
enums and 32-bit integers as numbers, 64-bit integers as decimal strings, non-finite doubles as
strings, ``bytes`` values base64. Unknown fields are skipped, as proto3 JSON does.

The fast reader expects what every protobuf serialiser writes: known fields in field-number order,
each singular field once, unknown fields after the known ones. Anything else (fields out of
order, a field repeated whose occurrences protobuf would merge, an AnyValue with two values set)
and anything that does not read as a request sends the whole request through upb once: parse,
re-serialise in that canonical form (or fail as upb fails), and transcode the result. So upb
stays the judge of what a request means, and irregular input costs time, never correctness.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections.abc import Callable
from typing import NamedTuple

import msgspec
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

# ---------------------------------------------------------------------------------------------
# Screening, on the request path
# ---------------------------------------------------------------------------------------------

#: Sentinel ids: the OTLP specification calls all-zero ids invalid.
_ZERO16 = bytes(16)
_ZERO8 = bytes(8)


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


#: Raw bytes of a ``resource`` field -> (service.name, canonical serialisation): an exporter sends
#: the same resource with every request, so it is looked at once. Cleared when full.
_RESOURCE_IDENTS: dict[bytes, tuple[str, bytes]] = {}
_RESOURCE_IDENTS_MAX = 4096
#: Bytes (keys and serialisations) that cache may hold, and the largest resource it keeps.
_RESOURCE_IDENTS_BYTES = 8 << 20
_resource_idents_bytes = 0


def _resource_fields(raw: bytes) -> list[bytes | None] | None:
    """Each ResourceSpans' ``resource`` field as its raw bytes (None: absent), in order, read from
    the request's wire bytes; None when the request is not laid out simply enough to be sure
    (a field other than ``resource_spans`` at the top, a ``resource`` field given twice, a field
    number ResourceSpans does not have, a wire type that is not length-delimited)."""
    out: list[bytes | None] = []
    p = 0
    end = len(raw)
    try:
        while p < end:
            if raw[p] != 0x0A:
                return None
            n = raw[p + 1]
            p += 2
            if n >= 0x80:
                n, p = _varint(raw, p - 1)
            stop = p + n
            if stop > end:
                return None
            res: bytes | None = None
            while p < stop:
                tag = raw[p]
                if tag not in (0x0A, 0x12, 0x1A):
                    return None
                n = raw[p + 1]
                p += 2
                if n >= 0x80:
                    n, p = _varint(raw, p - 1)
                if tag == 0x0A:
                    if res is not None:
                        return None
                    res = raw[p : p + n]
                p += n
            if p != stop:
                return None
            out.append(res)
    except (IndexError, ValueError):
        return None
    return out


def _remember_resource(key: bytes, ident: tuple[str, bytes]) -> None:
    global _resource_idents_bytes
    size = len(key) + len(ident[1]) + CACHE_ENTRY_OVERHEAD
    if size > MAX_CACHED_PART:
        return  # a resource this large is rare, and keeping it would pin its bytes
    if len(_RESOURCE_IDENTS) >= _RESOURCE_IDENTS_MAX or _resource_idents_bytes + size > _RESOURCE_IDENTS_BYTES:
        _RESOURCE_IDENTS.clear()
        _resource_idents_bytes = 0
    _RESOURCE_IDENTS[key] = ident
    _resource_idents_bytes += size


def _resource_ident(rs: ResourceSpans) -> tuple[str, bytes]:
    service = "unknown_service"
    if not rs.HasField("resource"):
        return (service, b"")
    res = rs.resource
    for kv in res.attributes:
        if kv.key == "service.name":
            service = kv.value.string_value or service
            break
    return (service, res.SerializeToString(deterministic=True))


def screen_request(req: ExportTraceServiceRequest, raw: bytes | None = None) -> Screened:
    """Check every span's ids and remove (in place) the spans a dump could not identify.

    This is all the receiver does per span before acknowledging a request: the JSON encoding
    happens later, off the request path, from the journal. ``raw``, the request's protobuf
    encoding if it came as protobuf, lets resources seen before be recognised by their bytes
    instead of being walked and re-serialised again.
    """
    kept = 0
    rejected = 0
    first_problem = ""
    resources: list[tuple[str, bytes]] = []
    all_rs = req.resource_spans
    fields = _resource_fields(raw) if raw is not None else None
    if fields is not None and len(fields) != len(all_rs):
        fields = None  # cannot happen for bytes upb parsed; never trust a walk that disagrees
    cache = _RESOURCE_IDENTS
    for k, rs in enumerate(all_rs):
        if fields is None:
            ident = _resource_ident(rs)
        else:
            key = fields[k]
            if key is None:
                ident = ("unknown_service", b"")
            else:
                got = cache.get(key)
                if got is None:
                    got = _resource_ident(rs)
                    _remember_resource(key, got)
                ident = got
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


# ---------------------------------------------------------------------------------------------
# Encoding, in the converter
# ---------------------------------------------------------------------------------------------

_json = msgspec.json.Encoder().encode
_hex = binascii.hexlify
_u64 = struct.Struct("<Q").unpack_from
_u32 = struct.Struct("<I").unpack_from
_f64 = struct.Struct("<d").unpack_from
_u64x2 = struct.Struct("<QxQ").unpack_from  # start and end time, with the end's tag between

#: Entries per cache before it is cleared.
CACHE_ENTRIES = 1 << 15
#: Bytes per cache (raw parts, their JSON and each entry's dict and object overhead) before it is
#: cleared: five caches per transcoder, so a converter's caches hold at most 5 x this.
CACHE_BYTES = 8 << 20
#: A part larger than this is transcoded every time, never cached: large values seldom repeat.
MAX_CACHED_PART = 64 << 10
#: What a cached entry costs besides its two byte strings (two bytes objects and a dict slot).
CACHE_ENTRY_OVERHEAD = 120
#: upb refuses messages nested more than 100 deep, and an attribute's KeyValue can sit 5 deep (a
#: link's or event's); so a value nested up to 95 deep below its KeyValue is valid wherever it is.
#: Deeper ones go through upb, which knows where they are.
_MAX_VALUE_DEPTH = 95

_M32 = 0xFFFFFFFF
#: Strings from this long are checked for a plain-ASCII shortcut (``_str_in``); shorter ones are
#: cheaper to decode and escape than to scan first.
_LONG_STRING = 64 << 10
#: What JSON escapes (controls, quote, backslash) or what must be checked as UTF-8 (non-ASCII).
_NOT_PLAIN = re.compile(rb'[\x00-\x1f"\\\x80-\xff]')
_M64 = 0xFFFFFFFFFFFFFFFF
#: Span.kind as the old walker wrote it, for the six kinds the specification defines.
_KINDS = [b""] + [b',"kind":%d' % k for k in range(1, 6)]
#: A span with a parent, both times and attributes, and no trace state.
_SPAN = (
    b'{"traceId":"%b","spanId":"%b","parentSpanId":"%b"%b%b%b'
    b',"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":[%b]%b}'
)


class TranscodeError(ValueError):
    """The bytes are not an ``ExportTraceServiceRequest`` (upb's verdict)."""


class _Irregular(Exception):
    """Valid protobuf the fast reader does not take (see the module docstring)."""


class Transcoded(NamedTuple):
    #: The OTLP/JSON line with its trailing newline; empty when no span survived screening.
    line: bytes
    spans: int
    #: Spans dropped for ids a dump cannot identify (the receiver drops them before journaling).
    rejected: int
    #: Each span's trace id in order, except that repeats of the previous span's are left out.
    trace_ids: list[bytes]


def _varint(buf: bytes, p: int) -> tuple[int, int]:
    """The varint at ``p`` and the offset after it (the one-byte case is inlined by callers)."""
    result = 0
    shift = 0
    while shift < 70:
        b = buf[p]
        p += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _M64, p
        shift += 7
    raise ValueError("varint longer than 10 bytes")


def _int32(v: int) -> int:
    v &= _M32
    return v - (1 << 32) if v >= 1 << 31 else v


def _tag(buf: bytes, p: int) -> tuple[int, int]:
    tag, q = _varint(buf, p)
    if q - p > 5 or tag > _M32 or tag >> 3 == 0:
        raise ValueError("invalid tag")
    return tag, q


def _skip(buf: bytes, p: int, tag: int) -> int:
    """The offset after the value of an unknown field whose tag ended at ``p``."""
    wt = tag & 7
    if wt == 0:
        return _varint(buf, p)[1]
    if wt == 1:
        return p + 8
    if wt == 2:
        n, p = _varint(buf, p)
        return p + n
    if wt == 5:
        return p + 4
    if wt == 3:
        end_tag = (tag & ~7) | 4
        while True:
            t, p = _tag(buf, p)
            if t == end_tag:
                return p
            p = _skip(buf, p, t)
    raise ValueError(f"wire type {wt}")


def _rest(buf: bytes, p: int, end: int, known: frozenset[int]) -> None:
    """Check that [p, end) holds only unknown fields, which proto3 JSON leaves out."""
    while p < end:
        tag, p = _tag(buf, p)
        if tag in known:
            raise _Irregular
        p = _skip(buf, p, tag)
    if p != end:
        raise ValueError("field runs past the end of its message")


def _len(buf: bytes, p: int) -> tuple[int, int]:
    """(start, end) of the length-delimited value whose length varint is at ``p``."""
    n = buf[p]
    if n < 0x80:
        return p + 1, p + 1 + n
    n, p = _varint(buf, p)
    return p, p + n


def _times(start: int, stop: int) -> bytes:
    out = b',"startTimeUnixNano":"%d"' % start if start else b""
    return out + b',"endTimeUnixNano":"%d"' % stop if stop else out


def _string_field(buf: bytes, p: int, end: int, tag: int, key: bytes, parts: list[bytes]) -> int:
    """Append ``key`` and the JSON string of the field ``tag`` when it comes next and is not
    empty (proto3 leaves it out of the JSON then); return the position after it. For the
    messages that are rare or cached (scopes, resources' entities, events, links, statuses);
    the span loop inlines the same steps."""
    if p < end and buf[p] == tag:
        start, p = _len(buf, p + 1)
        if p > start:
            parts.append(_str_in(buf, start, p, key))
    return p


def _count_field(buf: bytes, p: int, end: int, tag: int, key: bytes, parts: list[bytes]) -> int:
    """``_string_field`` for a uint32 count, left out when 0."""
    if p < end and buf[p] == tag:
        v, p = _varint(buf, p + 1)
        if v & _M32:
            parts.append(key + b"%d" % (v & _M32))
    return p


def _str(raw: bytes) -> bytes:
    # Decoding checks the UTF-8 (upb rejects bad UTF-8 too); msgspec escapes as the old walker did.
    return _json(raw.decode())


def _str_in(buf: bytes, start: int, end: int, before: bytes = b"", after: bytes = b"") -> bytes:
    """``before``, the JSON string of ``buf[start:end]`` and ``after``, as ``_str`` makes it, but
    made from the buffer without a copy of the string first: a 20 MiB attribute value otherwise
    stands in memory three or four times over at once (a slice, its decoded text, its JSON, and
    the JSON with ``before`` and ``after``)."""
    if end - start < _LONG_STRING:
        return before + _str(buf[start:end]) + after
    if _NOT_PLAIN.search(buf, start, end) is None:
        # Plain ASCII: its JSON is itself in quotes.
        return b"".join((before, b'"', memoryview(buf)[start:end], b'"', after))
    text = _json(str(memoryview(buf)[start:end], "utf-8"))
    return b"%b%b%b" % (before, text, after) if before or after else text


def _double(v: float) -> bytes:
    if math.isfinite(v):
        return _json(v)
    if math.isnan(v):
        return b'"NaN"'
    return b'"Infinity"' if v > 0 else b'"-Infinity"'


_RESOURCE_TAGS = frozenset((0x0A, 0x10, 0x1A))
_SCOPE_TAGS = frozenset((0x0A, 0x12, 0x1A, 0x20))
_KV_TAGS = frozenset((0x0A, 0x12, 0x18))
_ANY_TAGS = frozenset((0x0A, 0x10, 0x18, 0x21, 0x2A, 0x32, 0x3A, 0x40))
_LIST_TAGS = frozenset((0x0A,))
_ENTITY_TAGS = frozenset((0x0A, 0x12, 0x1A, 0x22))
_RS_TAGS = frozenset((0x0A, 0x12, 0x1A))
_SS_TAGS = _RS_TAGS
_SPAN_TAGS = frozenset((0x0A, 0x12, 0x1A, 0x22, 0x2A, 0x30, 0x39, 0x41, 0x4A, 0x50, 0x5A, 0x60, 0x6A, 0x70, 0x7A, 133))
_EVENT_TAGS = frozenset((0x09, 0x12, 0x1A, 0x20))
_LINK_TAGS = frozenset((0x0A, 0x12, 0x1A, 0x22, 0x28, 0x35))
_STATUS_TAGS = frozenset((0x12, 0x18))


class Transcoder:
    """Transcodes requests, keeping the bounded caches of repeated parts between them."""

    def __init__(self, cache_entries: int = CACHE_ENTRIES, cache_bytes: int = CACHE_BYTES) -> None:
        self.cache_entries = cache_entries
        self.cache_bytes = cache_bytes
        self._sizes: dict[int, int] = {}  # id(cache) -> bytes it holds
        self._kv: dict[bytes, bytes] = {}  # KeyValue bytes -> its JSON object
        self._resource: dict[bytes, bytes] = {}  # Resource bytes -> its JSON object
        self._scope: dict[bytes, bytes] = {}  # InstrumentationScope bytes -> its JSON object
        self._name: dict[bytes, bytes] = {}  # span name bytes -> ',"name":"..."'
        self._status: dict[bytes, bytes] = {}  # Status bytes -> ',"status":{...}'
        self._max_depth = _MAX_VALUE_DEPTH

    def caches(self) -> tuple[dict[bytes, bytes], ...]:
        return self._kv, self._resource, self._scope, self._name, self._status

    def cached_bytes(self) -> int:
        """What the caches hold, as they count it against ``cache_bytes``."""
        return sum(self._sizes.values())

    def transcode(self, body: bytes) -> Transcoded:
        """One journal record (a serialised request) -> its dump line and what the live view counts.

        Raises ``TranscodeError`` when upb cannot parse ``body`` either.
        """
        try:
            return self._request(body)
        except (_Irregular, ValueError, IndexError, struct.error, RecursionError):
            pass
        try:
            canonical = ExportTraceServiceRequest.FromString(body).SerializeToString()
        except DecodeError as exc:
            raise TranscodeError(str(exc)) from None
        # upb accepted it, nesting depth included; values nested deeper than the fast reader's
        # bound are then read, but not cached (they may not be valid deeper in another request).
        self._max_depth = 1 << 30
        try:
            return self._request(canonical)
        except (_Irregular, ValueError, IndexError, struct.error, RecursionError) as exc:  # a bug
            raise TranscodeError(f"upb reads this request but the transcoder does not: {exc!r}") from None
        finally:
            self._max_depth = _MAX_VALUE_DEPTH

    # -- the request and its containers -------------------------------------------------------
    def _request(self, buf: bytes) -> Transcoded:
        n = len(buf)
        out: list[bytes] = [b'{"resourceSpans":[']
        trace_ids: list[bytes] = []
        counts = [0, 0]  # kept, rejected
        p = 0
        sep = b""
        while p < n:
            tag = buf[p]
            if tag != 0x0A:  # resource_spans is the request's only field
                tag, p = _tag(buf, p)
                if tag == 0x0A:  # written with a redundant byte
                    raise _Irregular
                p = _skip(buf, p, tag)
                continue
            start, end = _len(buf, p + 1)
            if end > n:
                raise ValueError("field runs past the end of the request")
            out.append(sep)
            sep = b","
            self._resource_spans(buf, start, end, out, trace_ids, counts)
            p = end
        if p != n:
            raise ValueError("field runs past the end of the request")
        if not counts[0]:
            return Transcoded(b"", 0, counts[1], trace_ids)
        out.append(b"]}\n")
        return Transcoded(b"".join(out), counts[0], counts[1], trace_ids)

    def _resource_spans(
        self, buf: bytes, p: int, end: int, out: list[bytes], trace_ids: list[bytes], counts: list[int]
    ) -> None:
        out.append(b"{")
        p, sep = self._cached_field(buf, p, end, self._resource, self._resource_json, b'"resource":', out)
        if p < end and buf[p] == 0x12:
            out.append(sep + b'"scopeSpans":[')
            sep = b""
            while p < end and buf[p] == 0x12:
                start, p = _len(buf, p + 1)
                out.append(sep)
                sep = b","
                self._scope_spans(buf, start, p, out, trace_ids, counts)
            out.append(b"]")
            sep = b","
        p = _string_field(buf, p, end, 0x1A, sep + b'"schemaUrl":', out)
        _rest(buf, p, end, _RS_TAGS)
        out.append(b"}")

    def _scope_spans(
        self, buf: bytes, p: int, end: int, out: list[bytes], trace_ids: list[bytes], counts: list[int]
    ) -> None:
        out.append(b"{")
        p, sep = self._cached_field(buf, p, end, self._scope, self._scope_json, b'"scope":', out)
        if p < end and buf[p] == 0x12:
            p, opened = self._spans(buf, p, end, out, sep, trace_ids, counts)
            if opened:
                sep = b","
        p = _string_field(buf, p, end, 0x1A, sep + b'"schemaUrl":', out)
        _rest(buf, p, end, _SS_TAGS)
        out.append(b"}")

    def _cached_field(
        self,
        buf: bytes,
        p: int,
        end: int,
        cache: dict[bytes, bytes],
        build: Callable[[bytes, int, int], bytes],
        key: bytes,
        out: list[bytes],
    ) -> tuple[int, bytes]:
        """The message's first field (a resource or a scope, which repeat from request to
        request) as JSON, from the cache when its bytes were seen before; the position after it
        and the separator the next field needs."""
        if p < end and buf[p] == 0x0A:
            start, p = _len(buf, p + 1)
            raw = buf[start:p]
            frag = cache.get(raw)
            if frag is None:
                frag = self._cache(cache, raw, build(buf, start, p))
            out.append(key)
            out.append(frag)
            return p, b","
        return p, b""

    # -- spans: the hot loop ------------------------------------------------------------------
    def _spans(
        self,
        buf: bytes,
        p: int,
        end: int,
        out: list[bytes],
        sep: bytes,
        trace_ids: list[bytes],
        counts: list[int],
    ) -> tuple[int, bool]:
        """Append ``"spans":[...]`` for the run of spans at ``p``, unless none of them is valid;
        return the offset after the run and whether anything was appended.

        Written for speed: ``t`` is the tag byte at ``q`` (0 at the end of the span, which no
        field has), read once per field; the layouts every serialiser writes for the ids and the
        times are matched in one step each; rare fields are handled out of line.
        """
        hexlify = _hex
        u64 = _u64
        kv_cache = self._kv
        kv_json = self._kv_json
        names = self._name
        statuses = self._status
        spans: list[bytes] = []
        add = spans.append
        rejected = 0
        last_trace = b""
        while p < end and buf[p] == 0x12:
            n = buf[p + 1]
            if n < 0x80:
                q = p + 2
            elif buf[p + 2] < 0x80:
                n = (n & 0x7F) | (buf[p + 2] << 7)
                q = p + 3
            else:
                n, q = _varint(buf, p + 1)
            e = p = q + n
            if q + 28 <= e and buf[q] == 0x0A and buf[q + 1] == 16 and buf[q + 18] == 0x12 and buf[q + 19] == 8:
                trace_id = buf[q + 2 : q + 18]
                span_id = buf[q + 20 : q + 28]
                q += 28
                t = buf[q] if q < e else 0
            else:
                trace_id = span_id = b""
                t = buf[q] if q < e else 0
                if t == 0x0A:
                    s, q = _len(buf, q + 1)
                    trace_id = buf[s:q]
                    t = buf[q] if q < e else 0
                if t == 0x12:
                    s, q = _len(buf, q + 1)
                    span_id = buf[s:q]
                    t = buf[q] if q < e else 0
            head = parent = b""
            if t == 0x1A:
                s, q = _len(buf, q + 1)
                if q > s:
                    head = b',"traceState":' + _str(buf[s:q])
                t = buf[q] if q < e else 0
            if t == 0x22:
                s, q = _len(buf, q + 1)
                parent = buf[s:q]
                t = buf[q] if q < e else 0
            name = b""
            if t == 0x2A:
                n = buf[q + 1]
                if n < 0x80:
                    s = q + 2
                    q = s + n
                else:
                    s, q = _len(buf, q + 1)
                raw = buf[s:q]
                name = names.get(raw)  # type: ignore[assignment]
                if name is None:
                    name = self._cache(names, raw, b',"name":' + _str(raw) if raw else b"")
                t = buf[q] if q < e else 0
            kind = b""
            if t == 0x30:
                k = buf[q + 1]
                if k < 6:
                    kind = _KINDS[k]
                    q += 2
                else:
                    k, q = _varint(buf, q + 1)
                    k = _int32(k)
                    if k:
                        kind = b',"kind":%d' % k
                t = buf[q] if q < e else 0
            times = b""
            start = stop = 0
            if t == 0x39:
                if q + 18 <= e and buf[q + 9] == 0x41:
                    start, stop = _u64x2(buf, q + 1)
                    q += 18
                    if not (start and stop):
                        times = _times(start, stop)
                else:
                    times = _times(u64(buf, q + 1)[0], 0)
                    q += 9
                t = buf[q] if q < e else 0
            if t == 0x41:
                times += _times(0, u64(buf, q + 1)[0])
                q += 9
                t = buf[q] if q < e else 0
            attrs = None
            if t == 0x4A:
                frags = []
                while t == 0x4A:
                    n = buf[q + 1]
                    if n < 0x80:
                        s = q + 2
                        q = s + n
                    else:
                        s, q = _len(buf, q + 1)
                    raw = buf[s:q]
                    frag = kv_cache.get(raw)
                    frags.append(frag if frag is not None else kv_json(raw))
                    t = buf[q] if q < e else 0
                attrs = b",".join(frags)
            tail = b""
            if 0x50 <= t <= 0x70:
                tail, q = self._span_rare(buf, q, e)
                t = buf[q] if q < e else 0
            if t == 0x7A:
                n = buf[q + 1]
                if n < 0x80:
                    s = q + 2
                    q = s + n
                else:
                    s, q = _len(buf, q + 1)
                raw = buf[s:q]
                frag = statuses.get(raw)
                tail += frag if frag is not None else self._cache(statuses, raw, self._status_json(buf, s, q))
                t = buf[q] if q < e else 0
            flags = b""
            if t == 0x85 and buf[q + 1] == 0x01:
                f = _u32(buf, q + 2)[0]
                q += 6
                if f:
                    flags = b',"flags":%d' % f
            if q != e:
                _rest(buf, q, e, _SPAN_TAGS)
            # The screening the receiver does before journaling, kept so that the dump never
            # holds a span it cannot identify, whatever the journal holds.
            if (
                len(trace_id) != 16
                or len(span_id) != 8
                or trace_id == _ZERO16
                or span_id == _ZERO8
                or (parent and len(parent) != 8)
            ):
                rejected += 1
                continue
            if trace_id != last_trace:
                trace_ids.append(trace_id)
                last_trace = trace_id
            if parent and start and stop and attrs is not None and not head and len(attrs) < _LONG_STRING:
                # What nearly every span has, in one formatting step.
                ids = hexlify(trace_id), hexlify(span_id), hexlify(parent)
                add(_SPAN % (*ids, flags, name, kind, start, stop, attrs, tail))
                continue
            if parent:
                head += b',"parentSpanId":"' + hexlify(parent) + b'"'
            if start and stop:
                times = b',"startTimeUnixNano":"%d","endTimeUnixNano":"%d"' % (start, stop)
            # Joined rather than formatted: a large attribute is copied once (formatting grows
            # its buffer as it goes, and the attributes' brackets would be one copy more).
            add(
                b"".join(
                    (
                        b'{"traceId":"',
                        hexlify(trace_id),
                        b'","spanId":"',
                        hexlify(span_id),
                        b'"',
                        head,
                        flags,
                        name,
                        kind,
                        times,
                        b"" if attrs is None else b',"attributes":[',
                        b"" if attrs is None else attrs,
                        b"" if attrs is None else b"]",
                        tail,
                        b"}",
                    )
                )
            )
        if spans:
            # Kept apart in ``out`` (joined once, into the line): a span with a large value is
            # copied once more, not twice.
            out += (sep + b'"spans":[', b",".join(spans), b"]")
        counts[0] += len(spans)
        counts[1] += rejected
        return p, bool(spans)

    def _span_rare(self, buf: bytes, q: int, e: int) -> tuple[bytes, int]:
        """The span fields between attributes and status that most spans do not have."""
        parts: list[bytes] = []
        q = _count_field(buf, q, e, 0x50, b',"droppedAttributesCount":', parts)
        q = self._repeated(buf, q, e, 0x5A, self._event, b',"events":[', parts)
        q = _count_field(buf, q, e, 0x60, b',"droppedEventsCount":', parts)
        q = self._repeated(buf, q, e, 0x6A, self._link, b',"links":[', parts)
        q = _count_field(buf, q, e, 0x70, b',"droppedLinksCount":', parts)
        return b"".join(parts), q

    # -- the rest: rare or cached ---------------------------------------------------------------
    def _attributes_field(self, buf: bytes, p: int, end: int, tag: int, count_tag: int, parts: list[bytes]) -> int:
        """Append the attributes (field ``tag``) and their dropped count (``count_tag``) when
        they come next; return the position after them."""
        if p < end and buf[p] == tag:
            frag, p = self._attributes(buf, p, end, tag, b'"attributes":')
            parts.append(frag)
        return _count_field(buf, p, end, count_tag, b'"droppedAttributesCount":', parts)

    def _repeated(
        self,
        buf: bytes,
        p: int,
        end: int,
        tag: int,
        build: Callable[[bytes, int, int], bytes],
        key: bytes,
        parts: list[bytes],
    ) -> int:
        """Append ``key``, then the JSON of every message of the repeated field ``tag`` that
        comes next and ``]``; return the position after them."""
        if p < end and buf[p] == tag:
            items = []
            while p < end and buf[p] == tag:
                start, p = _len(buf, p + 1)
                items.append(build(buf, start, p))
            parts.append(key + b",".join(items) + b"]")
        return p

    def _cache(self, cache: dict[bytes, bytes], raw: bytes, frag: bytes) -> bytes:
        size = len(raw) + len(frag) + CACHE_ENTRY_OVERHEAD
        if size > MAX_CACHED_PART:
            return frag
        held = self._sizes.get(id(cache), 0)
        if len(cache) >= self.cache_entries or held + size > self.cache_bytes:
            cache.clear()
            held = 0
        cache[raw] = frag
        self._sizes[id(cache)] = held + size
        return frag

    def _attributes(self, buf: bytes, p: int, end: int, tag: int, key: bytes) -> tuple[bytes, int]:
        """``key`` + the JSON array of the run of KeyValue fields ``tag`` at ``p``, and the offset after."""
        cache = self._kv
        frags = []
        while p < end and buf[p] == tag:
            start, p = _len(buf, p + 1)
            raw = buf[start:p]
            frag = cache.get(raw)
            frags.append(frag if frag is not None else self._kv_json(raw))
        return key + b"[" + b",".join(frags) + b"]", p

    def _kv_json(self, raw: bytes) -> bytes:
        """An attribute's JSON object, cached by its bytes."""
        # Most attributes are a key and a string or an integer: read those in one go.
        n = len(raw)
        if n > 4 and raw[0] == 0x0A and raw[1] < 0x80:
            v = 2 + raw[1]  # the value field
            if v + 4 <= n and raw[v] == 0x12 and raw[v + 1] == n - v - 2 and raw[v + 1] > 1:
                key = raw[2:v]
                tag = raw[v + 2]
                if tag == 0x0A and raw[v + 3] == n - v - 4 and key:
                    frag = b'{"key":%b,"value":{"stringValue":%b}}' % (_str(key), _str(raw[v + 4 :]))
                    return self._cache(self._kv, raw, frag)
                if tag == 0x18 and raw[-1] < 0x80 and key:
                    i, end = _varint(raw, v + 3)
                    if end == n:
                        i = i - (1 << 64) if i >= 1 << 63 else i
                        frag = b'{"key":%b,"value":{"intValue":"%d"}}' % (_str(key), i)
                        return self._cache(self._kv, raw, frag)
        frag = self._kv_object(raw, 0, n, 0)
        if self._max_depth != _MAX_VALUE_DEPTH:  # see transcode()
            return frag
        return self._cache(self._kv, raw, frag)

    def _kv_object(self, buf: bytes, p: int, end: int, depth: int) -> bytes:
        """A KeyValue ``depth`` messages below the attribute it is part of (0: the attribute)."""
        # Joined once at the end, each part in its place: a large value is copied once here.
        parts: list[bytes] = [b"{"]
        p = _string_field(buf, p, end, 0x0A, b'"key":', parts)
        if p < end and buf[p] == 0x12:
            start, p = _len(buf, p + 1)
            parts.append(b',"value":' if len(parts) > 1 else b'"value":')
            parts.append(self._any_json(buf, start, p, depth + 1))
        if p < end and buf[p] == 0x18:
            v, p = _varint(buf, p + 1)
            if _int32(v):
                parts.append(b'%b"keyStrindex":%d' % (b"," if len(parts) > 1 else b"", _int32(v)))
        _rest(buf, p, end, _KV_TAGS)
        parts.append(b"}")
        return b"".join(parts)

    def _any_json(self, buf: bytes, p: int, end: int, depth: int) -> bytes:
        if depth > self._max_depth:
            raise _Irregular
        if p == end:
            return b"{}"
        tag = buf[p]
        p += 1
        if tag == 0x0A:
            start, p = _len(buf, p)
            out = _str_in(buf, start, p, b'{"stringValue":', b"}")
        elif tag == 0x10:
            v, p = _varint(buf, p)
            out = b'{"boolValue":true}' if v else b'{"boolValue":false}'
        elif tag == 0x18:
            v, p = _varint(buf, p)
            out = b'{"intValue":"%d"}' % (v - (1 << 64) if v >= 1 << 63 else v)
        elif tag == 0x21:
            out = b'{"doubleValue":' + _double(_f64(buf, p)[0]) + b"}"
            p += 8
        elif tag == 0x2A:
            start, p = _len(buf, p)
            out = b'{"arrayValue":' + self._array_json(buf, start, p, depth + 1) + b"}"
        elif tag == 0x32:
            start, p = _len(buf, p)
            out = b'{"kvlistValue":' + self._kvlist_json(buf, start, p, depth + 1) + b"}"
        elif tag == 0x3A:
            start, p = _len(buf, p)
            out = b'{"bytesValue":"' + base64.b64encode(buf[start:p]) + b'"}'
        elif tag == 0x40:
            v, p = _varint(buf, p)
            out = b'{"stringValueStrindex":%d}' % _int32(v)
        else:
            # An unknown field first: upb moves it after the value, if there is one.
            _rest(buf, p - 1, end, _ANY_TAGS)
            return b"{}"
        # A second value would replace the first (a oneof): upb decides.
        _rest(buf, p, end, _ANY_TAGS)
        return out

    def _array_json(self, buf: bytes, p: int, end: int, depth: int) -> bytes:
        return self._values_json(buf, p, end, depth, self._any_json)

    def _kvlist_json(self, buf: bytes, p: int, end: int, depth: int) -> bytes:
        return self._values_json(buf, p, end, depth, self._kv_object)

    def _values_json(
        self, buf: bytes, p: int, end: int, depth: int, item: Callable[[bytes, int, int, int], bytes]
    ) -> bytes:
        """An ArrayValue or a KeyValueList: both are ``repeated ... values = 1``."""
        if depth > self._max_depth:
            raise _Irregular
        values = []
        while p < end and buf[p] == 0x0A:
            start, p = _len(buf, p + 1)
            values.append(item(buf, start, p, depth + 1))
        _rest(buf, p, end, _LIST_TAGS)
        return b'{"values":[' + b",".join(values) + b"]}" if values else b"{}"

    def _resource_json(self, buf: bytes, p: int, end: int) -> bytes:
        parts: list[bytes] = []
        p = self._attributes_field(buf, p, end, 0x0A, 0x10, parts)
        p = self._repeated(buf, p, end, 0x1A, self._entity_ref_json, b'"entityRefs":[', parts)
        _rest(buf, p, end, _RESOURCE_TAGS)
        return b"{" + b",".join(parts) + b"}"

    def _entity_ref_json(self, buf: bytes, p: int, end: int) -> bytes:
        parts: list[bytes] = []
        p = _string_field(buf, p, end, 0x0A, b'"schemaUrl":', parts)
        p = _string_field(buf, p, end, 0x12, b'"type":', parts)
        for tag, key in ((0x1A, b'"idKeys":['), (0x22, b'"descriptionKeys":[')):
            if p < end and buf[p] == tag:
                keys = []
                while p < end and buf[p] == tag:
                    start, p = _len(buf, p + 1)
                    keys.append(_str(buf[start:p]))
                parts.append(key + b",".join(keys) + b"]")
        _rest(buf, p, end, _ENTITY_TAGS)
        return b"{" + b",".join(parts) + b"}"

    def _scope_json(self, buf: bytes, p: int, end: int) -> bytes:
        parts: list[bytes] = []
        p = _string_field(buf, p, end, 0x0A, b'"name":', parts)
        p = _string_field(buf, p, end, 0x12, b'"version":', parts)
        p = self._attributes_field(buf, p, end, 0x1A, 0x20, parts)
        _rest(buf, p, end, _SCOPE_TAGS)
        return b"{" + b",".join(parts) + b"}"

    def _event(self, buf: bytes, p: int, end: int) -> bytes:
        parts: list[bytes] = []
        if p < end and buf[p] == 0x09:
            t = _u64(buf, p + 1)[0]
            p += 9
            if t:
                parts.append(b'"timeUnixNano":"%d"' % t)
        p = _string_field(buf, p, end, 0x12, b'"name":', parts)
        p = self._attributes_field(buf, p, end, 0x1A, 0x20, parts)
        _rest(buf, p, end, _EVENT_TAGS)
        return b"{" + b",".join(parts) + b"}"

    def _link(self, buf: bytes, p: int, end: int) -> bytes:
        parts: list[bytes] = []
        for tag, key in ((0x0A, b'"traceId":"'), (0x12, b'"spanId":"')):
            if p < end and buf[p] == tag:
                start, p = _len(buf, p + 1)
                if p > start:
                    parts.append(key + _hex(buf[start:p]) + b'"')
        p = _string_field(buf, p, end, 0x1A, b'"traceState":', parts)
        p = self._attributes_field(buf, p, end, 0x22, 0x28, parts)
        if p < end and buf[p] == 0x35:
            f = _u32(buf, p + 1)[0]
            p += 5
            if f:
                parts.append(b'"flags":%d' % f)
        _rest(buf, p, end, _LINK_TAGS)
        return b"{" + b",".join(parts) + b"}"

    def _status_json(self, buf: bytes, p: int, end: int) -> bytes:
        parts: list[bytes] = []
        p = _string_field(buf, p, end, 0x12, b'"message":', parts)
        if p < end and buf[p] == 0x18:
            v, p = _varint(buf, p + 1)
            if _int32(v):
                parts.append(b'"code":%d' % _int32(v))
        _rest(buf, p, end, _STATUS_TAGS)
        return b',"status":{' + b",".join(parts) + b"}"
