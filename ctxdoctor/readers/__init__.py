"""Open dumps of any supported format (plain or gzip) and read them into one ``Dump``."""

from __future__ import annotations

import gc
import gzip
import io
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from ctxdoctor.errors import InputError
from ctxdoctor.model import Span
from ctxdoctor.readers import parallel
from ctxdoctor.readers._workers import CAN_FORK, usable_cpus
from ctxdoctor.readers.interface import PROGRESS_EVERY, Reader, ReadWarning, reporting
from ctxdoctor.readers.otlp_json import OtlpJsonReader
from ctxdoctor.readers.otlp_proto import OtlpProtoReader
from ctxdoctor.units import UnitTable

#: Tried in order; the first whose ``sniff`` accepts the head of the stream reads it.
READERS: tuple[Reader, ...] = (OtlpJsonReader(), OtlpProtoReader())

_GZIP_MAGIC = b"\x1f\x8b"


class Dump(msgspec.Struct):
    """Everything read from one or more files."""

    spans: list[Span]
    warnings: list[ReadWarning]
    files: list[str]


def _open(path: Path) -> tuple[io.BufferedReader, io.BufferedReader]:
    """The file as stored (for its position), and its content, decompressed when it is gzip
    (by content, whatever its name)."""
    raw = path.open("rb")
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        return raw, io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"))
    return raw, raw


def read_paths(
    paths: Iterable[Path | str],
    *,
    progress: Callable[[int, int], None] | None = None,
    jobs: int = 1,
) -> Dump:
    """Read every file. Raises ``InputError`` on the first malformed file.

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
        if not p.exists():
            raise InputError(p, "no such file")
        if p.is_dir():
            raise InputError(p, "is a directory; name the dump files (e.g. dir/*.json)")
        total += p.stat().st_size
    if jobs <= 0:
        jobs = usable_cpus()
    if not CAN_FORK or total < parallel.PARALLEL_MIN_BYTES:
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
                return Dump(spans=spans, warnings=warnings, files=[str(p) for p in files])
        done = 0
        for p in files:
            read_file(
                p, units, spans.append, warnings.append, None if progress is None else _offset(progress, done, total)
            )
            done += p.stat().st_size
            if progress is not None:
                progress(done, total)
    finally:
        if gc_was_on:
            gc.enable()
    return Dump(spans=spans, warnings=warnings, files=[str(p) for p in files])


def _splittable(path: Path) -> int | None:
    """The index of the reader of a plain (not compressed) file, which may then be cut."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
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
) -> None:
    """Read one file; ``position(bytes_read)`` is told how far it got, now and then."""
    try:
        raw, stream = _open(path)
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror or exc}") from None
    if position is not None:
        emit = reporting(emit, PROGRESS_EVERY, lambda: position(raw.tell()))

    with raw, stream:
        try:
            head = stream.peek(64)[:64]
        except (OSError, EOFError) as exc:
            raise InputError(path, f"cannot read: {exc}") from None
        if not head.strip():
            warn(ReadWarning(str(path), "file is empty"))
            return
        for reader in READERS:
            if reader.sniff(head):
                try:
                    reader.read(str(path), stream, units, emit, warn)
                except (OSError, EOFError, gzip.BadGzipFile) as exc:
                    raise InputError(path, f"cannot read: {exc}") from None
                return
        raise InputError(
            path,
            "not a trace dump: expected OTLP/JSON lines (starting with '{') or the Collector "
            "file exporter's proto format (4-byte length + ExportTraceServiceRequest)",
            offset=0,
        )
