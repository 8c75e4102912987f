"""The files the receiver appends to: the journal, the dump and the receipts sidecar.

The receiver acknowledges a request only after it is in the journal, so every append goes
straight to the OS with ``os.write`` (no user-space buffer that a crash could lose) under one
lock, which also keeps records from interleaving. A failed write (disk full, file size limit, I/O
error) is rolled back by truncating to the last complete record, so the file stays readable and
the exporter, told UNAVAILABLE, sends the request again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
from pathlib import Path

import msgspec


class DumpWriteError(OSError):
    """The dump could not be written; what was written before is intact."""

    def __str__(self) -> str:
        return str(self.strerror)


class OutputExists(DumpWriteError):
    """The dump to write already holds an earlier run's spans, and replacing it was not asked for."""


class SinkClosed(RuntimeError):
    """The receiver is shutting down and takes no more writes."""


def _write_all(fd: int, data: bytes | tuple[bytes, ...]) -> None:
    """Write every byte; parts (a record's length and its body) go in one ``writev``, without
    joining them into a copy first (a body may be tens of MiB)."""
    views = [memoryview(data)] if isinstance(data, bytes) else [memoryview(p) for p in data]
    while views:
        n = os.writev(fd, views) if len(views) > 1 else os.write(fd, views[0])
        if n <= 0:  # pragma: no cover - os.write raises rather than returning 0 on regular files
            raise OSError(errno.EIO, "short write")
        while n:
            if n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0
        while views and not len(views[0]):
            views.pop(0)


def _describe(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "disk full"
    elif exc.errno == errno.EFBIG:
        reason = "file size limit reached"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"not permitted ({exc.strerror})"
    return reason


class AppendFile:
    """Appends complete records (dump lines, journal records, receipts); thread-safe."""

    def __init__(self, path: Path, *, append: bool = False, exclusive: bool = False) -> None:
        """``exclusive``: hold an advisory lock for as long as the file is open, so that a second
        receiver (or a converter still finishing an earlier run) never writes the same file."""
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        if not append and not exclusive:
            flags |= os.O_TRUNC
        try:
            self._fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise DumpWriteError(exc.errno, f"cannot open {path}: {_describe(exc)}") from None
        if exclusive:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._fd)
                raise DumpWriteError(
                    errno.EBUSY,
                    f"{path} is being written by another ctxdoctor process "
                    "(another listen, or one still finishing its dump); use another --output",
                ) from None
            if not append and stat.S_ISREG(os.fstat(self._fd).st_mode):
                os.ftruncate(self._fd, 0)
        self._lock = threading.Lock()
        self._size = os.fstat(self._fd).st_size
        self._closed = False
        self.lines = 0
        self.bytes = 0
        self.failures = 0
        self.last_error: str | None = None

    def append(self, line: bytes | tuple[bytes, ...]) -> None:
        """Write one complete record (or its parts, in order), or raise ``DumpWriteError``
        leaving the file as it was."""
        with self._lock:
            if self._closed:
                raise SinkClosed("the dump is closed")
            try:
                _write_all(self._fd, line)
            except OSError as exc:
                self.failures += 1
                # Drop the partial line so the dump stays a sequence of complete requests.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
                self.last_error = f"cannot write {self.path}: {_describe(exc)}"
                raise DumpWriteError(exc.errno, self.last_error) from None
            size = len(line) if isinstance(line, bytes) else sum(len(p) for p in line)
            self._size += size
            self.lines += 1
            self.bytes += size
            self.last_error = None

    @property
    def size(self) -> int:
        return self._size

    def truncate(self) -> None:
        """Empty the file: done only once the receiver is certain to run (see ``Receiver.start``)."""
        with self._lock:
            os.ftruncate(self._fd, 0)
            self._size = 0

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)


DumpSink = AppendFile


def drop_partial_line(path: Path) -> int:
    """Cut a last line that has no newline; returns the bytes cut.

    ``AppendFile`` rolls back a failed append itself, but not when its process is killed between
    a short write (a disk filling up) and the rollback: the receiver kills a converter that cannot
    write for a while. Lines are tens of kB, so the search for the last newline reads little.
    """
    try:
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            pos = size
            while pos > 0:
                start = max(0, pos - (1 << 20))
                f.seek(start)
                newline = f.read(pos - start).rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                pos = start
            else:
                keep = 0
            if keep < size:
                f.truncate(keep)
            return size - keep
    except OSError:
        return 0


def journal_record(data: bytes) -> bytes:
    """A record of the Collector file exporter's proto format: 4-byte big-endian length, body."""
    return len(data).to_bytes(4, "big") + data


def journal_record_parts(data: bytes) -> tuple[bytes, bytes]:
    """``journal_record`` as its two parts, for ``AppendFile.append``: no copy of the body."""
    return len(data).to_bytes(4, "big"), data


class Receipt(msgspec.Struct, frozen=True, omit_defaults=True):
    """What arrived, from where and how: one line of the sidecar per request."""

    time: float  # Unix seconds of arrival
    protocol: str  # "grpc", "http/protobuf" or "http/json"
    peer: str  # "127.0.0.1:53122": one exporter connection
    compression: str | None
    bytes: int  # body size on the wire
    spans: int  # spans kept (written to the dump)
    rejected: int = 0  # spans rejected through partial_success
    services: tuple[str, ...] = ()
    status: str = "ok"  # "ok", "partial", or the error answered


class ReceiptLog:
    """The sidecar (``<dump>.receipts.jsonl``). Best effort: a receipt that cannot be written is
    counted, never a reason to fail the request, because the spans are already safe."""

    def __init__(self, path: Path, *, truncate: bool = True) -> None:
        """``truncate=False``: open without emptying it; ``truncate()`` empties it later."""
        self.path = path
        self._file = AppendFile(path, append=not truncate)
        self._encode = msgspec.json.Encoder().encode
        self.failures = 0

    def write(self, receipt: Receipt) -> None:
        try:
            self._file.append(self._encode(receipt) + b"\n")
        except (DumpWriteError, SinkClosed):
            self.failures += 1

    def truncate(self) -> None:
        self._file.truncate()

    def close(self) -> None:
        self._file.close()


def read_receipts(path: Path) -> list[Receipt]:
    dec = msgspec.json.Decoder(Receipt)
    return [dec.decode(line) for line in path.read_bytes().splitlines() if line.strip()]
