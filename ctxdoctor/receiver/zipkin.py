"""Zipkin v2 over HTTP: ``POST /api/v2/spans`` with a JSON array of spans, on its own port (9411,
Zipkin's), so that apps still exporting with a Zipkin exporter can be diagnosed live.

The OTLP/HTTP server does the HTTP (keep-alive, chunked bodies, gzip, size limits, shutdown);
only the request differs. A body is turned into the OTLP request the Zipkin reader would make of
it (``readers.zipkin``: one mapping for files and for the wire) and then journaled like any OTLP
request, so the dump, the durability and the receipts are the same. Answers are Zipkin's:
``202 Accepted`` with no body, and errors as plain text (400 for a body that is not Zipkin v2 JSON,
413, 415, 503 with ``Retry-After`` when the dump cannot be written, so the exporter retries).
Zipkin's protobuf encoding is refused with a message naming the JSON encoder: the OpenTelemetry
Zipkin exporters send JSON.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from typing import Any

import msgspec

from ctxdoctor.readers.documents import ShapeError
from ctxdoctor.readers.zipkin import spans_request
from ctxdoctor.receiver.decode import BadRequest, parse_json
from ctxdoctor.receiver.http_server import HttpServer, TooLarge, _BodyError, _Handler
from ctxdoctor.receiver.inflate import Corrupt
from ctxdoctor.receiver.inflate import TooLarge as InflatesTooLarge
from ctxdoctor.receiver.ingest import Ingest
from ctxdoctor.receiver.sink import SinkClosed

PATH = "/api/v2/spans"
DEFAULT_PORT = 9411
PROTOCOL = "zipkin/json"
_TEXT = "text/plain; charset=utf-8"


class _ZipkinHandler(_Handler):
    def _post(self) -> None:
        arrived = time.time()
        path = self.path.split("?", 1)[0]
        if path != PATH:
            self._drain_quietly()
            self._text(404, f"no such path {path!r}: Zipkin v2 spans go to POST {PATH}")
            return
        ctype = (self.headers.get("Content-Type") or "application/json").split(";", 1)[0].strip().lower()
        content_encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        compression = None if content_encoding == "identity" else content_encoding
        ingest = self.owner.ingest
        ingest.begin()
        try:

            def refuse(n: int, status: str) -> None:
                ingest.refuse(
                    protocol=PROTOCOL, peer=self.peer, compression=compression, nbytes=n, arrived=arrived, status=status
                )

            if ctype != "application/json":
                self._drain_quietly()
                refuse(0, f"unsupported content type {ctype!r}")
                self._text(415, f"unsupported Content-Type {ctype!r}: send Zipkin v2 JSON (application/json)")
                return
            if content_encoding not in ("identity", "gzip", "x-gzip", "deflate"):
                self._drain_quietly()
                refuse(0, f"unsupported content encoding {content_encoding!r}")
                self._text(415, f"unsupported Content-Encoding {content_encoding!r}: send gzip or no compression")
                return
            limit = self.owner.max_message_bytes
            try:
                wire = self._read_body(limit if compression is None else limit + (1 << 20))
            except TooLarge as exc:
                self._drain_quietly()
                refuse(0, f"too large: {exc}")
                self._text(413, str(exc))
                return
            except _BodyError as exc:
                self._drain_quietly()
                refuse(0, f"invalid: {exc}")
                self._text(400, str(exc))
                return
            if compression is None:
                self._accept(wire, wire, compression, arrived, refuse)
                return
            # Inflated within the receiver's budget, as OTLP/HTTP bodies are: a gzip bomb is
            # refused after holding a few MiB, and only so many inflate at once.
            wbits = 16 + zlib.MAX_WBITS if content_encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
            try:
                with self.owner.inflate.inflate(wire, wbits, limit) as body:
                    self._accept(wire, body, compression, arrived, refuse)
            except InflatesTooLarge as exc:
                refuse(0, f"too large: request body {exc}")
                self._text(413, f"request body {exc}")
            except Corrupt as exc:
                refuse(0, f"invalid: body is not valid {content_encoding}: {exc}")
                self._text(400, f"body is not valid {content_encoding}: {exc}")
        finally:
            ingest.end()

    def _accept(
        self, wire: bytes, body: bytes, compression: str | None, arrived: float, refuse: Callable[[int, str], None]
    ) -> None:
        """Parse, journal and answer one Zipkin request whose body was read (and inflated)."""
        ingest = self.owner.ingest
        failed: tuple[str, Exception] | None = None
        with self.owner.work_lock:
            try:
                req, pre_rejected, pre_problem = _request(body)
            except BadRequest as exc:
                failed = ("invalid", exc)
            else:
                try:
                    if req is not None:
                        ingest.accept(
                            req,
                            raw=None,
                            protocol=PROTOCOL,
                            peer=self.peer,
                            compression=compression,
                            nbytes=len(wire),
                            arrived=arrived,
                            pre_rejected=pre_rejected,
                            pre_problem=pre_problem,
                        )
                except (SinkClosed, OSError) as exc:
                    failed = ("unavailable", exc)
        if failed is not None:
            kind, err = failed
            if kind == "invalid":
                refuse(len(wire), f"invalid: {err}")
                self._text(400, str(err))
            elif isinstance(err, SinkClosed):
                self._text(503, "ctxdoctor is shutting down; retry later", retry_after=True)
            else:
                self._text(503, f"ctxdoctor {err}; retry later", retry_after=True)
            return
        self._send(202, b"", _TEXT)

    def _not_allowed(self) -> None:
        path = self.path.split("?", 1)[0]
        self._drain_quietly()
        if path != PATH:
            self._text(404, f"no such path {path!r}: Zipkin v2 spans go to POST {PATH}")
        else:
            self._text(405, f"method {self.command} not allowed: use POST", allow=True)

    _method_not_allowed = _not_allowed
    do_GET = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _not_allowed

    def _text(self, code: int, message: str, *, retry_after: bool = False, allow: bool = False) -> None:
        headers = [("Retry-After", "1")] if retry_after else []
        if allow:
            headers.append(("Allow", "POST"))
        self._send(code, message.encode("utf-8", "replace") + b"\n", _TEXT, headers)


def _request(body: bytes) -> tuple[Any, int, str]:
    """The OTLP request a Zipkin body makes (None when it holds no spans), the spans rejected
    for unreadable ids and the first such problem. Raises ``BadRequest``."""
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    try:
        otlp = spans_request(doc)
    except ShapeError as exc:
        raise BadRequest(f"body is not Zipkin v2 JSON: {exc}") from None
    if otlp is None:
        return None, 0, ""
    return parse_json(msgspec.json.encode(otlp))


class ZipkinServer(HttpServer):
    """``HttpServer`` answering Zipkin's ``POST /api/v2/spans`` instead of OTLP's ``/v1/traces``."""

    handler_class = _ZipkinHandler

    def __init__(
        self, ingest: Ingest, host: str, port: int, *, max_message_bytes: int, log: Callable[[str], None] | None = None
    ) -> None:
        from ctxdoctor.receiver.grpc_server import PortInUse, bind_reason

        try:
            super().__init__(ingest, host, port, max_message_bytes=max_message_bytes, log=log)
        except PortInUse:
            reason = bind_reason(host, port, "--zipkin-port")
            raise PortInUse(f"cannot listen for Zipkin on {host}:{port}: {reason}") from None

    def stop(self, grace: float = 10.0) -> list[str]:
        if self._thread is None:  # never started (a later port was busy): nothing to wait for
            self._httpd.server_close()
            return []
        return super().stop(grace)
