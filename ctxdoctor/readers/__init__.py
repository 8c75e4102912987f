"""Open dumps of any supported format (plain or gzip) and read them into one ``Dump``."""

from __future__ import annotations

import gc
import gzip
import io
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from ctxdoctor.errors import InputError
from ctxdoctor.model import Span
from ctxdoctor.readers import parallel
from ctxdoctor.readers._workers import CAN_FORK, usable_cpus
from ctxdoctor.readers.interface import PROGRESS_EVERY, Reader, ReadWarning, reporting
from ctxdoctor.readers.jaeger import JaegerReader
from ctxdoctor.readers.otlp_json import OtlpJsonReader
from ctxdoctor.readers.otlp_proto import OtlpProtoReader
from ctxdoctor.readers.sniffing import looks_like
from ctxdoctor.readers.tempo import TempoReader
from ctxdoctor.readers.zipkin import ZipkinReader
from ctxdoctor.units import UnitTable

#: Tried in order; the first whose ``sniff`` accepts the head of the stream reads it.
READERS: tuple[Reader, ...] = (JaegerReader(), TempoReader(), ZipkinReader(), OtlpJsonReader(), OtlpProtoReader())
#: How much of a stream the readers' ``sniff`` sees: enough for the first key of a JSON
#: document however it is indented.
SNIFF_BYTES = 512

_GZIP_MAGIC = b"\x1f\x8b"
#: Bytes of a file's start kept to judge a file that yields no span (see ``check_is_trace_dump``).
_LEAD = 4096
_KEY = re.compile(rb'"([A-Za-z_][A-Za-z0-9_.-]{0,40})"\s*:')


class Dump(msgspec.Struct):
    """Everything read from one or more files."""

    spans: list[Span]
    warnings: list[ReadWarning]
    files: list[str]
    #: Whether the spans kept their attribute values (``read_paths(values=...)``, resolved).
    values: bool = False


#: The read buffer of a plain dump: a line of the Collector's JSON is hundreds of kilobytes, and
#: ``readline`` through the default few kilobytes gathers it piece by piece, a read call each
#: (the parallel reader's pieces have a buffer of this size too). A gzip stream keeps the
#: default: its first ``peek`` would inflate this much, and meet corrupt data there instead of
#: in the reader, which says where.
_BUFFER = 1 << 20


def _open(path: Path) -> tuple[io.BufferedReader, io.BufferedReader]:
    """The file as stored (for its position), and its content, decompressed when it is gzip
    (by content, whatever its name)."""
    raw: io.BufferedReader = io.BufferedReader(io.FileIO(path, "rb"), buffer_size=_BUFFER)
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        return raw, io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"))
    return raw, raw


def read_paths(
    paths: Iterable[Path | str],
    *,
    progress: Callable[[int, int], None] | None = None,
    jobs: int = 1,
    values: bool | None = None,
) -> Dump:
    """Read every file. Raises ``InputError`` on the first malformed file.

    ``values``: keep the spans' attribute values (``Span.values``); ``None``: for inputs small
    enough to be read in one process (under ``parallel.PARALLEL_MIN_BYTES``). Decoding every
    attribute costs about as much again as the rest of a span; the ids an app shares between a
    dispatcher and its work matter most in the small dumps of a test run, and a big production
    dump keeps its reading speed. Values are always read in one process.

    ``progress(bytes_done, bytes_total)`` is called as files are read (every
    ``PROGRESS_EVERY`` spans and after each file) so a TTY can show a bar. ``jobs`` > 1 lets
    that many processes share big inputs (``parallel``); 0 means one per usable CPU. The
    result is the same either way.
    """
    files = [Path(p) for p in paths]
    units = UnitTable()
    spans: list[Span] = []
    warnings: list[ReadWarning] = []
    total = 0
    for p in files:
        total += _regular_file_size(p)
    if jobs <= 0:
        jobs = usable_cpus()
    values = reads_values(values, total)
    if not CAN_FORK or total < parallel.PARALLEL_MIN_BYTES or values:
        jobs = 1
    # Loading allocates millions of objects and frees almost none: the cyclic collector would
    # walk the growing heap again and again for nothing.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        if jobs > 1:
            runs = parallel.plan(files, jobs, READERS, _splittable)
            if len(runs) > 1:
                spans, warnings = parallel.read_runs(
                    runs, units, _read_piece, None if progress is None else lambda done: progress(done, total)
                )
                _check_times(spans, files, warnings)
                return Dump(spans=spans, warnings=warnings, files=[str(p) for p in files], values=values)
        done = 0
        for p in files:
            read_file(
                p,
                units,
                spans.append,
                warnings.append,
                None if progress is None else _offset(progress, done, total),
                values=values,
            )
            done += p.stat().st_size
            if progress is not None:
                progress(done, total)
    finally:
        if gc_was_on:
            gc.enable()
    _check_times(spans, files, warnings)
    return Dump(spans=spans, warnings=warnings, files=[str(p) for p in files], values=values)


def reads_values(asked: bool | None, total_bytes: int) -> bool:
    """Whether spans keep their attribute values: as asked, else for inputs read in one process
    (see ``read_paths``). The live view asks the same of its window of requests."""
    return total_bytes < parallel.PARALLEL_MIN_BYTES if asked is None else asked


def _regular_file_size(p: Path) -> int:
    """The size of a dump file, or ``InputError``: a FIFO or a device would be read until its
    writer closes it, which may be never, so only regular files are read."""
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(p, "no such file") from None
    except OSError as exc:
        raise InputError(p, f"cannot open: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(p, "is a directory; name the dump files (e.g. dir/*.json)")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise InputError(p, f"is {kind}, not a file; save the dump to a file and name that")
    if not os.access(p, os.R_OK):
        raise InputError(p, "cannot open: permission denied")
    return st.st_size


#: Nanoseconds since 1970 that fit a signed 64-bit integer (until the year 2262). A time past it
#: is no clock's reading: usually -1 or another negative number written as unsigned.
_LATEST_TIME = (1 << 63) - 1


def _check_times(spans: list[Span], files: list[Path], warnings: list[ReadWarning]) -> None:
    """Warn once about spans whose times are impossible (ending before they start, or after
    2262). They are kept: their ids and parents are what the diagnosis reads, but their times are
    not to be trusted, and a person reading the dump should know."""
    # Two tests a span, not three: one that starts past the limit either ends past it too or
    # ends before it starts.
    bad = [s for s in spans if s.end < s.start or s.end > _LATEST_TIME]
    if not bad:
        return
    first = bad[0]
    where = str(files[0]) if len(files) == 1 else f"{len(files)} files"
    warnings.append(
        ReadWarning(
            where,
            f"{len(bad)} span(s) have impossible times (end before start, or past the year 2262), "
            f"first: trace {first.trace_id:032x} span {first.span_id:016x}; kept, but their "
            "durations are not to be trusted",
        )
    )


def _splittable(path: Path) -> int | None:
    """The index of the reader of a plain (not compressed) file, which may then be cut."""
    try:
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return None
    if head[:2] == _GZIP_MAGIC or not head.strip():
        return None
    return next((i for i, r in enumerate(READERS) if r.sniff(head)), None)


def _read_piece(
    piece: parallel.Piece,
    units: UnitTable,
    emit: Callable[[Span], None],
    warn: Callable[[ReadWarning], None],
    position: Callable[[int], None] | None,
) -> None:
    parallel.read_piece(piece, READERS, units, emit, warn, position, read_file)


def _offset(progress: Callable[[int, int], None], base: int, total: int) -> Callable[[int], None]:
    """Progress within one file, as progress through all of them."""
    return lambda pos: progress(base + pos, total)


def read_file(
    path: Path,
    units: UnitTable,
    emit: Callable[[Span], None],
    warn: Callable[[ReadWarning], None],
    position: Callable[[int], None] | None = None,
    *,
    values: bool = False,
) -> None:
    """Read one file; ``position(bytes_read)`` is told how far it got, now and then.
    ``values``: keep the spans' attribute values."""
    try:
        raw, stream = _open(path)
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror or exc}") from None
    if position is not None:
        emit = reporting(emit, PROGRESS_EVERY, lambda: position(raw.tell()))

    with raw, stream:
        try:
            # Enough to tell the format apart and, for a file that yields no span, what it is.
            lead = stream.peek(_LEAD)[:_LEAD]
            head = lead[:SNIFF_BYTES]
        except (OSError, EOFError) as exc:
            raise InputError(path, f"cannot read: {exc}") from None
        if not head.strip():
            warn(ReadWarning(str(path), "file is empty"))
            return
        reader = reader_for(path, head)
        try:
            emitted = reader.read(str(path), stream, units, emit, warn, values=values)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            # Compressed data that is corrupt or cut short: where in the file, not a traceback.
            raise InputError(path, f"the gzip data is corrupt or truncated ({exc})", offset=raw.tell()) from None
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
        if emitted == 0:
            check_is_trace_dump(path, lead)


def reader_of(path: Path) -> Reader:
    """The reader of a file, by its (decompressed) content. Raises ``InputError``."""
    try:
        raw, stream = _open(path)
        with raw, stream:
            head = stream.peek(SNIFF_BYTES)[:SNIFF_BYTES]
    except (OSError, EOFError) as exc:
        raise InputError(path, f"cannot read: {exc}") from None
    if not head.strip():
        raise InputError(path, "file is empty")
    return reader_for(path, head)


def reader_for(path: Path, head: bytes) -> Reader:
    """The reader of a file whose (decompressed) content starts with ``head``, by content alone.
    Raises ``InputError`` naming what the file looks like when no reader takes it."""
    for reader in READERS:
        if reader.sniff(head):
            return reader
    raise InputError(path, not_a_trace_dump(head), offset=0)


#: Keys an OTLP trace document has at its top (``TracesData``/``ExportTraceServiceRequest``,
#: camelCase or snake_case, and the pre-0.15 name): a document without any of them that yields no
#: span is some other JSON, not an empty dump.
_OTLP_TRACE_KEYS = (b'"resourceSpans"', b'"resource_spans"', b'"instrumentationLibrarySpans"')


def check_is_trace_dump(path: Path, head: bytes) -> None:
    """Raise ``InputError`` for a file that was read without error but yielded no span and is not
    recognisably an (empty) trace dump: input that is not a trace dump is never read as an empty,
    healthy one. The one place that decides it, for every reader."""
    if head.lstrip()[:1] != b"{" or any(key in head for key in _OTLP_TRACE_KEYS):
        return  # a proto dump whose records hold no span, or OTLP/JSON with empty resourceSpans
    raise InputError(path, not_a_trace_dump(head), offset=0)


def not_a_trace_dump(head: bytes) -> str:
    """Why a file is refused, naming what it looks like (from its first bytes, decompressed)."""
    return (
        f"not a trace dump: it looks like {_described(head)}; expected OTLP/JSON lines "
        '({"resourceSpans": ...}), the Collector file exporter\'s proto format (4-byte length + '
        'ExportTraceServiceRequest), Jaeger JSON ({"data": [...]}), Zipkin v2 JSON ([{"traceId", ...}]) '
        'or a Grafana Tempo answer ({"batches": ...} or {"trace": ...}); see docs/formats.md'
    )


def _described(head: bytes) -> str:
    """What the file looks like, with the names of its first keys (never their values: they may
    be secrets) when it is a JSON object."""
    what = looks_like(head)
    text = head.lstrip()
    if text[:1] != b"{":
        return what
    keys: list[str] = []
    for m in _KEY.finditer(text):
        k = m.group(1).decode("ascii")
        if k not in keys:
            keys.append(k)
    return f"{what}, with keys {', '.join(keys[:5])}" if keys else what
