"""The Collector file exporter's ``proto`` format: records of a 4-byte big-endian length
followed by that many bytes of ``ExportTraceServiceRequest``.

The records are decoded by ``otlp_proto_spans``, imported on the first read: telling the format
apart and cutting a file into pieces need no protobuf.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import BinaryIO

from ctxdoctor.errors import InputError
from ctxdoctor.readers.interface import ReadWarning, SpanSink
from ctxdoctor.units import UnitTable

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: A record larger than this is not a length prefix but some other file.
MAX_RECORD = 1 << 30


class OtlpProtoReader:
    name = "otlp-proto"

    def boundary(self, file: BinaryIO, offset: int) -> int | None:
        """The first record start at or after ``offset``, found by walking the length prefixes
        (a few thousand per GB); ``None`` if a prefix is implausible before it."""
        size = file.seek(0, 2)
        pos = 0
        while pos < offset:
            file.seek(pos)
            header = file.read(4)
            if len(header) < 4:
                return None
            (length,) = struct.unpack(">I", header)
            if length > MAX_RECORD or pos + 4 + length > size:
                return None
            pos += 4 + length
        return pos

    def sniff(self, head: bytes) -> bool:
        # Any four bytes are some length: the record behind them must also open like a request
        # (a Python module's '"""T' is a length of 572 MB, random bytes one in four times).
        if len(head) < 6:
            return False
        (length,) = struct.unpack(">I", head[:4])
        if not 0 < length <= MAX_RECORD:
            return False
        body = head[4:]
        return body[:4] == _ZSTD_MAGIC or _opens_a_request(body, length)

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
        from ctxdoctor.readers.otlp_proto_spans import DecodeError, request_spans

        # A piece of a file starts and ends at record boundaries (``boundary``), so no record
        # is judged differently in a piece: both flags are the same here.
        offset = 0
        names: dict[str, str] = {}
        seen_values: dict[str, str] | None = {} if values else None
        while True:
            header = stream.read(4)
            if not header:
                return
            if len(header) < 4:
                warn(
                    ReadWarning(
                        path, "truncated length prefix at the end; everything before it was read", offset=offset
                    )
                )
                return
            (length,) = struct.unpack(">I", header)
            first = at_start and offset == 0
            if length > MAX_RECORD:
                raise InputError(
                    path,
                    f"record length {length} is not plausible: expected a 4-byte big-endian length "
                    "followed by an ExportTraceServiceRequest (Collector file exporter, format: proto)",
                    offset=offset,
                )
            body = stream.read(length)
            if len(body) < length and first:
                # Nothing before it to keep: a file this short is no dump, not an empty one.
                raise InputError(path, _not_a_dump(f"claims {length} bytes, the file holds {len(body)}"), offset=0)
            if len(body) < length:
                warn(
                    ReadWarning(
                        path,
                        f"last record is truncated ({len(body)} of {length} bytes; the writer was probably "
                        "stopped mid-write); everything before it was read",
                        offset=offset,
                    )
                )
                return
            if body[:4] == _ZSTD_MAGIC:
                raise InputError(
                    path,
                    "record is zstd-compressed (Collector file exporter with compression: zstd); "
                    "write the dump without compression, or with format: json",
                    offset=offset,
                )
            try:
                request_spans(body, units, emit, names, seen_values)
            except DecodeError as exc:
                if first:
                    raise InputError(path, _not_a_dump(f"does not decode ({exc})"), offset=0) from None
                raise InputError(
                    path, f"record is not a valid ExportTraceServiceRequest: {exc}", offset=offset
                ) from None
            offset += 4 + length


def _not_a_dump(first_record: str) -> str:
    return (
        f"not a trace dump: its first record {first_record}; expected the Collector file exporter's "
        "proto format (a 4-byte big-endian length, then an ExportTraceServiceRequest) or one of the "
        "formats in docs/formats.md"
    )


def _opens_a_request(body: bytes, length: int) -> bool:
    """Whether a record of ``length`` bytes starting with ``body`` opens like an
    ``ExportTraceServiceRequest`` that holds spans: its first field is ``resource_spans`` (field 1,
    length-delimited, the request's only field), whose length fits in the record, and which opens
    with one of ``ResourceSpans``' own fields. Writers emit fields in order, and neither ``listen``
    nor the Collector writes a request without spans."""
    if body[:1] != b"\x0a":
        return False
    n = shift = 0
    p = 1
    while True:
        if p >= len(body) or p > 5:
            return False
        b = body[p]
        n |= (b & 0x7F) << shift
        p += 1
        if not b & 0x80:
            break
        shift += 7
    if p + n > length:
        return False
    # resource (1), scope_spans (2) or schema_url (3), all length-delimited.
    return n == 0 or p >= len(body) or body[p] in (0x0A, 0x12, 0x1A)
