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

from collections.abc import Callable
from typing import Any

import msgspec

from ctxdoctor.readers.documents import ShapeError
from ctxdoctor.readers.zipkin import spans_request
from ctxdoctor.receiver.decode import BadRequest, parse_json
from ctxdoctor.receiver.http_server import HttpServer, _Handler
from ctxdoctor.receiver.ingest import Accepted, Ingest

PATH = "/api/v2/spans"
DEFAULT_PORT = 9411
PROTOCOL = "zipkin/json"
_TEXT = "text/plain; charset=utf-8"


class _ZipkinHandler(_Handler):
    """The OTLP/HTTP handler's flow with Zipkin's path, media type, parsing and answers."""

    _path = PATH
    _payload = "Zipkin v2 spans"
    _server_name = "Zipkin"
    _default_type = "application/json"  # Zipkin's exporters may send none
    _accepted_types = "Zipkin v2 JSON (application/json)"

    def _encoding(self, ctype: str) -> str | None:
        return "json" if ctype == "application/json" else None

    def _protocol_of(self, encoding: str | None) -> str:
        return PROTOCOL

    def _parse(self, body: bytes, encoding: str) -> tuple[Any, bytes | None, int, str]:
        req, pre_rejected, pre_problem = _request(body)
        return req, None, pre_rejected, pre_problem

    def _answer_accepted(self, res: Accepted, encoding: str) -> bool:
        return self._send(202, b"", _TEXT)

    def _answer_error(
        self,
        http_code: int,
        grpc_code: int,
        message: str,
        encoding: str,
        *,
        retry_after: bool = False,
        allow: bool = False,
    ) -> None:
        """Zipkin's errors are plain text."""
        headers = [("Retry-After", "1")] if retry_after else []
        if allow:
            headers.append(("Allow", "POST"))
        self._send(http_code, message.encode("utf-8", "replace") + b"\n", _TEXT, headers)


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
