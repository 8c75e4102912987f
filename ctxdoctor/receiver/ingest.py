"""What both servers do with a decoded request: check, journal, count, receipt.

Kept apart from the transports so that gRPC and HTTP share one definition of "accepted": the
request is in the journal (written to the OS) before this returns, and only then does a server
answer OK. The journal becomes the OTLP/JSON dump behind it (``convert.py``).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ctxdoctor.receiver.encode import screen_request
from ctxdoctor.receiver.sink import AppendFile, Receipt, ReceiptLog, journal_record_parts

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
#: Requests kept whose answer did not reach the client, remembered (by a 32-byte digest of the
#: body) so that an exporter's retry of one is acknowledged without being written again.
_UNANSWERED_MAX = 4096


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=32).digest()


def redact(message: str) -> str:
    """Drop quoted values from an error message before it is written to a file: a parser's
    message may quote an attribute value, and attribute values can be secrets."""
    return _QUOTED.sub("'…'", message)


@dataclass
class ReceiverStats:
    """Running totals; read them from any thread (each field is one atomic store)."""

    requests: int = 0
    spans: int = 0
    rejected_spans: int = 0
    failed_requests: int = 0  # answered with an error (bad input, too large, cannot write)
    bytes_in: int = 0
    write_errors: int = 0
    last_write_error: str | None = None
    #: service.name -> distinct exporter connections ("protocol peer") that sent it spans.
    connections: dict[str, set[str]] = field(default_factory=dict)
    peers: set[str] = field(default_factory=set)
    #: service.name -> distinct resources (SDK instances) seen; with OTLP/HTTP one SDK may use
    #: several connections, so this is the count that says "one SDK per worker".
    resources: dict[str, set[bytes]] = field(default_factory=dict)

    def connections_per_service(self) -> dict[str, int]:
        return {svc: len(conns) for svc, conns in sorted(self.connections.items())}

    def resources_per_service(self) -> dict[str, int]:
        return {svc: len(res) for svc, res in sorted(self.resources.items())}


@dataclass(frozen=True)
class Accepted:
    spans: int
    rejected: int
    error_message: str


class Ingest:
    """Shared by the transports; thread-safe."""

    def __init__(self, journal: AppendFile, receipts: ReceiptLog | None, max_spans: int | None = None) -> None:
        self.journal = journal
        self.receipts = receipts
        self.stats = ReceiverStats()
        self.max_spans = max_spans
        self._lock = threading.Lock()
        self._activity = threading.Condition(self._lock)
        self._in_flight = 0
        self._last_activity = time.monotonic()
        self.on_write_error: Callable[[str], None] | None = None
        self.on_internal_error: Callable[[str], None] = lambda message: None
        self.on_limit: Callable[[], None] | None = None
        self.limit_reached = threading.Event()
        self._unanswered: OrderedDict[bytes, int] = OrderedDict()  # digest -> spans

    # -- activity tracking (wait_idle) ---------------------------------------------------------
    def begin(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._last_activity = time.monotonic()

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._last_activity = time.monotonic()
            self._activity.notify_all()

    def wait_idle(self, seconds: float, timeout: float | None = None) -> bool:
        """Block until nothing arrived or ran for ``seconds``. False if ``timeout`` came first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                now = time.monotonic()
                quiet = now - self._last_activity
                if self._in_flight == 0 and quiet >= seconds:
                    return True
                wait = seconds - quiet if self._in_flight == 0 else seconds
                if deadline is not None:
                    if now >= deadline:
                        return False
                    wait = min(wait, deadline - now)
                self._activity.wait(max(wait, 0.01))

    # -- requests ------------------------------------------------------------------------------
    def accept(
        self,
        req: ExportTraceServiceRequest,
        *,
        raw: bytes | None,
        protocol: str,
        peer: str,
        compression: str | None,
        nbytes: int,
        arrived: float,
        pre_rejected: int = 0,
        pre_problem: str = "",
        body: bytes | None = None,
    ) -> Accepted:
        """Append the request to the journal. ``raw`` is its protobuf encoding when the request
        came as protobuf (written as is unless spans had to be removed); ``body`` the request as
        it arrived (decompressed), to recognise the retry of one that went unanswered. Raises
        ``DumpWriteError``/``SinkClosed`` when it cannot; the caller then answers UNAVAILABLE
        and the exporter retries."""
        if body is not None and self._unanswered:
            retried = self._retry_of_unanswered(body, protocol, peer, compression, nbytes, arrived)
            if retried is not None:
                return retried
        screened = screen_request(req, raw)
        if screened.spans:
            data = raw if raw is not None and not screened.rejected else req.SerializeToString()
            try:
                self.journal.append(journal_record_parts(data))
            except OSError as exc:
                self._failed(protocol, peer, compression, nbytes, arrived, f"unavailable: {exc}", write=str(exc))
                raise
        rejected = screened.rejected + pre_rejected
        message = screened.error_message
        if pre_rejected:
            head = f"{pre_rejected} span(s) rejected for unreadable ids; first: {pre_problem}"
            message = f"{head}; {message}" if message else head
        st = self.stats
        hit_limit = False
        with self._lock:
            st.requests += 1
            st.spans += screened.spans
            st.rejected_spans += rejected
            st.bytes_in += nbytes
            conn = f"{protocol} {peer}"
            st.peers.add(conn)
            for svc, res in screened.resources:
                st.connections.setdefault(svc, set()).add(conn)
                st.resources.setdefault(svc, set()).add(res)
            st.last_write_error = None
            if self.max_spans is not None and st.spans >= self.max_spans and not self.limit_reached.is_set():
                self.limit_reached.set()
                hit_limit = True
        self._receipt(
            arrived,
            protocol,
            peer,
            compression,
            nbytes,
            "partial" if rejected else "ok",
            spans=screened.spans,
            rejected=rejected,
            services=screened.services,
        )
        if hit_limit and self.on_limit is not None:
            self.on_limit()
        return Accepted(screened.spans, rejected, message)

    def unanswered(self, *, protocol: str, peer: str, body: bytes, spans: int) -> None:
        """A request was kept but its answer did not go out (the client had gone): say so in the
        receipts, and remember it so that its retry is not written again."""
        key = _digest(body)
        with self._lock:
            self._unanswered[key] = spans
            while len(self._unanswered) > _UNANSWERED_MAX:
                self._unanswered.popitem(last=False)
        self._receipt(
            time.time(),
            protocol,
            peer,
            None,
            0,
            f"unanswered: the client left before its answer; its {spans} span(s) are kept, "
            "and a retry of the same request will not be written again",
        )

    def _retry_of_unanswered(
        self, body: bytes, protocol: str, peer: str, compression: str | None, nbytes: int, arrived: float
    ) -> Accepted | None:
        key = _digest(body)
        with self._lock:
            spans = self._unanswered.pop(key, None)
            if spans is None:
                return None
            self.stats.requests += 1
            self.stats.bytes_in += nbytes
        self._receipt(
            arrived,
            protocol,
            peer,
            compression,
            nbytes,
            f"duplicate: the retry of an unanswered request, whose {spans} span(s) are "
            "already kept; acknowledged, not written again",
        )
        return Accepted(0, 0, "")

    def refuse(
        self, *, protocol: str, peer: str, compression: str | None, nbytes: int, arrived: float, status: str
    ) -> None:
        """Count and receipt a request answered with an error."""
        self._failed(protocol, peer, compression, nbytes, arrived, status)

    def _failed(
        self,
        protocol: str,
        peer: str,
        compression: str | None,
        nbytes: int,
        arrived: float,
        status: str,
        write: str | None = None,
    ) -> None:
        with self._lock:
            self.stats.failed_requests += 1
            self.stats.bytes_in += nbytes
            if write is not None:
                self.stats.write_errors += 1
                self.stats.last_write_error = write
        if write is not None and self.on_write_error is not None:
            self.on_write_error(write)
        self._receipt(arrived, protocol, peer, compression, nbytes, redact(status)[:300])

    def _receipt(
        self,
        arrived: float,
        protocol: str,
        peer: str,
        compression: str | None,
        nbytes: int,
        status: str,
        *,
        spans: int = 0,
        rejected: int = 0,
        services: tuple[str, ...] = (),
    ) -> None:
        """One line of the receipts sidecar, when there is one."""
        if self.receipts is not None:
            self.receipts.write(
                Receipt(
                    time=arrived,
                    protocol=protocol,
                    peer=peer,
                    compression=compression,
                    bytes=nbytes,
                    spans=spans,
                    rejected=rejected,
                    services=services,
                    status=status,
                )
            )
