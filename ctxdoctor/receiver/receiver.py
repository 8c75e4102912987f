"""The in-process receiver: both OTLP transports, one journal, one dump.

Used by ``ctxdoctor listen`` and by the fixture recorders, which run real apps against it.
A request is acknowledged once it is in the journal; a child process (``convert.py``) turns the
journal into the OTLP/JSON dump behind it, and ``stop()`` waits for it to finish, so after the
``with`` block the dump holds every acknowledged span.

The journal is already a dump in the Collector file exporter's ``proto`` format. With
``dump_format="proto"`` it is written as the dump itself: nothing to convert, so the dump is
complete the moment a request is acknowledged, at any rate of spans, and ``stop()`` does not wait.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Literal

import msgspec

import ctxdoctor
from ctxdoctor.findings import Settings
from ctxdoctor.receiver.convert import Progress
from ctxdoctor.receiver.grpc_server import GrpcServer
from ctxdoctor.receiver.heap import return_large_blocks
from ctxdoctor.receiver.http_server import HttpServer
from ctxdoctor.receiver.inflate import InflateBudget
from ctxdoctor.receiver.ingest import Ingest, ReceiverStats
from ctxdoctor.receiver.sink import AppendFile, OutputExists, ReceiptLog, drop_partial_line

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20

DumpFormat = Literal["json", "proto"]
#: Output names that ask for the proto format when none is given (``listen -o dump.pb``).
PROTO_SUFFIXES = (".pb", ".binpb")


def dump_format_for(output: Path, requested: str | None = None) -> DumpFormat:
    """The format to write ``output`` in: as requested, else by its suffix (JSON by default)."""
    if requested in ("json", "proto"):
        return requested  # type: ignore[return-value]
    return "proto" if output.suffix.lower() in PROTO_SUFFIXES else "json"


def receipts_path(output: Path) -> Path:
    return output.with_name(output.name + ".receipts.jsonl")


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".journal")


class ConverterFailed(RuntimeError):
    pass


class Receiver:
    """Serve OTLP/gRPC and OTLP/HTTP on ``host``, writing every accepted request to ``output``.

    ``grpc_port``/``http_port`` 0 picks a free port (read the bound ones from the attributes);
    ``None`` disables that transport. Leaving the ``with`` block stops accepting, lets in-flight
    requests finish, and completes the dump. While running, ``flush()`` waits until the dump
    holds everything acknowledged so far.
    """

    def __init__(
        self,
        output: Path | str,
        host: str = "127.0.0.1",
        grpc_port: int | None = 4317,
        http_port: int | None = 4318,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        receipts: bool = True,
        max_spans: int | None = None,
        log: Callable[[str], None] | None = None,
        grace: float = 10.0,
        append: bool = False,
        journal: Path | str | None = None,
        live: bool = False,
        settings: Settings | None = None,
        stall_timeout: float = 5.0,
        dump_format: DumpFormat = "json",
        overwrite: bool = True,
    ) -> None:
        """``grace``: how long stopping waits for requests in flight, on each transport, before
        it cuts them. ``overwrite=False``: refuse (``OutputExists``) to replace a dump that holds
        something, rather than empty it."""
        if dump_format not in ("json", "proto"):
            raise ValueError(f"dump_format must be 'json' or 'proto', not {dump_format!r}")
        self.output = Path(output)
        self.dump_format: DumpFormat = dump_format
        self.host = host
        self._requested = (grpc_port, http_port)
        self.max_message_bytes = max_message_bytes
        self.grace = grace
        self._log = log
        self.receipts_path: Path | None = receipts_path(self.output) if receipts else None
        if dump_format == "proto":
            if journal is not None:
                raise ValueError("a proto dump is its own journal: do not name another")
            self.journal_path = self.output
        else:
            self.journal_path = Path(journal) if journal is not None else journal_path(self.output)
        self._append = append
        self._overwrite = overwrite
        self.inflate = InflateBudget()
        self._max_spans = max_spans
        self._live = live
        #: What the live view's orphan count is diagnosed with: the settings of the final report.
        self._settings = settings
        self.stall_timeout = stall_timeout
        self._ingest: Ingest | None = None
        self._grpc: GrpcServer | None = None
        self._http: HttpServer | None = None
        self._converter: subprocess.Popen[bytes] | None = None
        self._progress = Progress()
        self._progress_cond = threading.Condition()
        self._converter_exited = False
        self._stopped = threading.Event()
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        #: After ``stop()``: the file holding every acknowledged span (the dump, or the journal
        #: when the dump could not be completed).
        self.result_path: Path = self.output
        self.dump_complete = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Receiver:
        """Open the files, bind both ports, start converting. Raises ``PortInUse``,
        ``DumpWriteError`` or ``OutputExists``.

        Nothing that exists is emptied until both ports are bound and every file is open: a
        receiver that cannot start (a busy port, a journal it cannot create) leaves the previous
        dump and receipts as they were, and removes only the empty files it created.
        """
        return_large_blocks()
        proto = self.dump_format == "proto"
        if not self._overwrite and not self._append:
            try:
                size = self.output.stat().st_size
            except OSError:
                size = 0  # none yet (or not a file we can see: opening it says why)
            if size > 0:
                raise OutputExists(
                    17,
                    f"{self.output} already exists ({size} bytes, an earlier run's dump): pass --force to "
                    "replace it, or name another file with --output",
                )
        new = [p for p in (self.output, self.journal_path, self.receipts_path) if p is not None and not p.exists()]
        opened: list[AppendFile | ReceiptLog] = []
        try:
            # Writable, and nobody else's? Checked without changing it. The converter locks it
            # for the run (the receiver itself, when the dump is the journal).
            AppendFile(self.output, append=True, exclusive=True).close()
            if not proto:
                self._set_aside_stale_journal()  # renamed, never emptied
            journal = AppendFile(self.journal_path, append=True, exclusive=True)
            opened.append(journal)
            receipts = ReceiptLog(self.receipts_path, truncate=False) if self.receipts_path is not None else None
            if receipts is not None:
                opened.append(receipts)
            ingest = Ingest(journal, receipts, max_spans=self._max_spans)
            ingest.on_internal_error = self.log
            self._ingest = ingest
            grpc_port, http_port = self._requested
            if grpc_port is not None:
                self._grpc = GrpcServer(
                    ingest, self.host, grpc_port, max_message_bytes=self.max_message_bytes, inflate=self.inflate
                )
                self.grpc_port = self._grpc.port
            if http_port is not None:
                self._http = HttpServer(
                    ingest,
                    self.host,
                    http_port,
                    max_message_bytes=self.max_message_bytes,
                    grpc_port=self.grpc_port,
                    log=self.log,
                    inflate=self.inflate,
                )
                self.http_port = self._http.port
            # Certain to run: now the earlier run's files are replaced.
            if not self._append:
                if receipts is not None:
                    receipts.truncate()
                if proto:
                    journal.truncate()
                else:
                    AppendFile(self.output, append=False, exclusive=True).close()
            self._start_converter()
        except BaseException:
            if self._grpc is not None:
                self._grpc.stop(0)
            if self._http is not None:
                self._http.stop(0)
            for f in opened:
                f.close()
            if self._converter is not None:
                self._converter.kill()
                self._converter.wait()
            self._ingest = None
            for p in new:
                with contextlib.suppress(OSError):
                    if p.stat().st_size == 0:
                        p.unlink()
            raise
        if self._grpc is not None:
            self._grpc.start()
        if self._http is not None:
            self._http.start()
        return self

    def _set_aside_stale_journal(self) -> None:
        p = self.journal_path
        if p.is_file() and p.stat().st_size > 0:
            aside = p.with_name(f"{p.name}.{time.strftime('%Y%m%d-%H%M%S')}")
            p.rename(aside)
            self.log(
                f"found {p.name} from an interrupted run: it holds every request that run acknowledged; "
                f"kept as {aside.name} (analyze it with: ctxdoctor analyze {aside})"
            )

    def _start_converter(self) -> None:
        env = dict(os.environ)
        root = str(Path(ctxdoctor.__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [
            sys.executable,
            "-m",
            "ctxdoctor.receiver.convert_main",
            str(self.journal_path),
            "-" if self.dump_format == "proto" else str(self.output),  # "-": observe only
            "--append",
        ]
        if not self._live:
            cmd.append("--no-live")
        elif self._settings is not None:
            cmd.append("--settings=" + msgspec.json.encode(self._settings).decode())
        self._converter = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C is for the receiver; it tells the converter when to stop
        )
        threading.Thread(target=self._read_progress, name="convert-progress", daemon=True).start()

    def _read_progress(self) -> None:
        assert self._converter is not None and self._converter.stdout is not None
        decode = msgspec.json.Decoder(Progress).decode
        for line in self._converter.stdout:
            try:
                p = decode(line)
            except msgspec.DecodeError:
                continue
            with self._progress_cond:
                self._progress = p
                self._progress_cond.notify_all()
        with self._progress_cond:
            self._converter_exited = True
            self._progress_cond.notify_all()

    def stop(self, progress: Callable[[Progress, int], None] | None = None) -> None:
        """Stop accepting, finish in-flight requests, complete and close the dump. Idempotent.

        ``progress(conversion, journal_size)`` is called while the dump catches up.
        """
        if self._stopped.is_set() or self._ingest is None:
            return
        self._stopped.set()
        threads = []
        if self._grpc is not None:
            grpc_server = self._grpc
            threads.append(threading.Thread(target=grpc_server.stop, args=(self.grace,), name="stop-grpc"))
        if self._http is not None:
            threads.append(threading.Thread(target=self._http.stop, args=(self.grace,), name="stop-http"))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        journal = self._ingest.journal
        journal.close()
        if self._ingest.receipts is not None:
            self._ingest.receipts.close()
        self._finish_conversion(journal.size, progress)

    def _finish_conversion(self, size: int, progress: Callable[[Progress, int], None] | None) -> None:
        conv = self._converter
        assert conv is not None and conv.stdin is not None
        if self.dump_format == "proto":
            # The journal is the dump and it is closed: complete. The observer's figures are
            # only for the live view, so it is not waited for.
            with contextlib.suppress(OSError):
                conv.stdin.close()
            conv.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                conv.wait(10)
            self.dump_complete = True
            self.result_path = self.output
            return
        with contextlib.suppress(OSError):
            conv.stdin.write(f"end {size}\n".encode())
            conv.stdin.close()
        last_offset = -1
        last_move = time.monotonic()
        with self._progress_cond:
            while True:
                p = self._progress
                if p.done or self._converter_exited:
                    break
                if p.offset != last_offset:
                    last_offset, last_move = p.offset, time.monotonic()
                elif p.error and time.monotonic() - last_move > self.stall_timeout:
                    break  # it cannot write the dump and is not getting anywhere
                if progress is not None:
                    progress(p, size)
                self._progress_cond.wait(0.25)
        if conv.poll() is None and not self._progress.done:
            conv.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            conv.wait(10)
        p = self._progress
        if progress is not None:
            progress(p, size)
        self.dump_complete = p.done and p.offset >= size
        if self.dump_complete:
            if self.journal_path.is_file():
                self.journal_path.unlink()
            self.result_path = self.output
        else:
            self.result_path = self.journal_path
            drop_partial_line(self.output)  # the converter may have been killed mid-append
            why = p.error or f"the converter stopped ({conv.returncode})"
            self.log(
                f"ERROR the dump {self.output} is incomplete ({why}); every acknowledged request is in "
                f"{self.journal_path}, which ctxdoctor analyze reads as it is"
            )

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- observing -----------------------------------------------------------------------------
    @property
    def _core(self) -> Ingest:
        if self._ingest is None:
            raise RuntimeError("the receiver is not started")
        return self._ingest

    @property
    def stats(self) -> ReceiverStats:
        return self._core.stats

    @property
    def conversion(self) -> Progress:
        """How far the dump has caught up with the journal, and the converter's live figures."""
        return self._progress

    @property
    def dump_behind(self) -> int:
        """Bytes of the journal not yet in the dump (never any when the journal is the dump)."""
        if self.dump_format == "proto":
            return 0
        return max(0, self.journal_size - self._progress.offset)

    @property
    def journal_size(self) -> int:
        return self._core.journal.size

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def limit_reached(self) -> threading.Event:
        """Set once ``max_spans`` spans were accepted."""
        return self._core.limit_reached

    def wait_idle(self, seconds: float, timeout: float | None = None) -> bool:
        """Wait until no request arrived or ran for ``seconds``; False if ``timeout`` passed first."""
        return self._core.wait_idle(seconds, timeout)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until the dump holds every request acknowledged so far. False on timeout."""
        target = self._core.journal.size
        if self.dump_format == "proto":
            return True  # acknowledged means written to the journal, which is the dump
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._progress_cond:
            while self._progress.offset < target:
                if self._converter_exited:
                    raise ConverterFailed("the journal converter exited; see the receiver's log")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._progress_cond.wait(remaining if remaining is not None else 1.0)
        return True

    def on_write_error(self, callback: Callable[[str], None]) -> None:
        self._core.on_write_error = callback

    def log(self, message: str) -> None:
        if self._log is not None:
            with contextlib.suppress(Exception):
                self._log(message)
