"""The in-process receiver: both OTLP transports writing one dump.

Used by ``ctxdoctor listen`` and by the fixture recorders, which run real apps against it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from ctxdoctor.receiver.grpc_server import GrpcServer
from ctxdoctor.receiver.http_server import HttpServer
from ctxdoctor.receiver.ingest import Batch, Ingest, ReceiverStats
from ctxdoctor.receiver.sink import DumpSink, ReceiptLog

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20


def receipts_path(output: Path) -> Path:
    return output.with_name(output.name + ".receipts.jsonl")


class Receiver:
    """Serve OTLP/gRPC and OTLP/HTTP on ``host``, appending every accepted request to ``output``.

    ``grpc_port``/``http_port`` 0 picks a free port (read the bound ones from the attributes);
    ``None`` disables that transport. Leaving the ``with`` block stops accepting, lets in-flight
    requests finish, and closes the dump.
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
    ) -> None:
        self.output = Path(output)
        self.host = host
        self._requested = (grpc_port, http_port)
        self.max_message_bytes = max_message_bytes
        self.grace = grace
        self._log = log
        self.receipts_path: Path | None = receipts_path(self.output) if receipts else None
        self._append = append
        self._max_spans = max_spans
        self._ingest: Ingest | None = None
        self._grpc: GrpcServer | None = None
        self._http: HttpServer | None = None
        self._stopped = threading.Event()
        self.grpc_port: int | None = None
        self.http_port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Receiver:
        """Open the dump and bind both ports. Raises ``PortInUse`` or ``DumpWriteError``."""
        sink = DumpSink(self.output, append=self._append)
        receipts = ReceiptLog(self.receipts_path) if self.receipts_path is not None else None
        ingest = Ingest(sink, receipts, max_spans=self._max_spans)
        self._ingest = ingest
        grpc_port, http_port = self._requested
        try:
            if grpc_port is not None:
                self._grpc = GrpcServer(
                    ingest, self.host, grpc_port, max_message_bytes=self.max_message_bytes
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
                )
                self.http_port = self._http.port
        except BaseException:
            if self._grpc is not None:
                self._grpc.stop(0)
            sink.close()
            if receipts is not None:
                receipts.close()
            raise
        if self._grpc is not None:
            self._grpc.start()
        if self._http is not None:
            self._http.start()
        return self

    def stop(self) -> None:
        """Stop accepting, finish in-flight requests, flush and close the dump. Idempotent."""
        if self._stopped.is_set() or self._ingest is None:
            return
        self._stopped.set()
        threads = []
        if self._grpc is not None:
            grpc_server = self._grpc
            threads.append(threading.Thread(target=grpc_server.stop, args=(self.grace,), name="stop-grpc"))
        if self._http is not None:
            threads.append(threading.Thread(target=self._http.stop, name="stop-http"))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._ingest.sink.close()
        if self._ingest.receipts is not None:
            self._ingest.receipts.close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
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
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def limit_reached(self) -> threading.Event:
        """Set once ``max_spans`` spans were accepted."""
        return self._core.limit_reached

    def wait_idle(self, seconds: float, timeout: float | None = None) -> bool:
        """Wait until no request arrived or ran for ``seconds``; False if ``timeout`` passed first."""
        return self._core.wait_idle(seconds, timeout)

    def subscribe(self) -> queue.SimpleQueue[Batch]:
        """Every request accepted from now on, with its receipt (for live views)."""
        return self._core.subscribe()

    def on_write_error(self, callback: Callable[[str], None]) -> None:
        self._core.on_write_error = callback

    def log(self, message: str) -> None:
        if self._log is not None:
            with contextlib.suppress(Exception):
                self._log(message)
