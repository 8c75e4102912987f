"""OTLP/HTTP: ``POST /v1/traces`` on the standard library's ``ThreadingHTTPServer``.

Why the standard library: one thread per connection matches the blocking dump writer, keep-alive
works with ``HTTP/1.1``, and it needs no dependency; what it lacks (chunked request bodies, which
the Node.js exporter sends, gzip, size limits, OTLP error bodies) is a few dozen lines here.
Errors carry a ``google.rpc.Status`` in the request's encoding, as the OTLP specification asks.

A gRPC client pointed at this port opens with the HTTP/2 preface; it is answered with an HTTP/2
GOAWAY whose debug text names the right port, and reported once per peer.
"""

from __future__ import annotations

import contextlib
import email.parser
import http.client
import re
import select
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ctxdoctor.receiver.decode import BadRequest, parse_json, parse_protobuf
from ctxdoctor.receiver.inflate import Corrupt, InflateBudget
from ctxdoctor.receiver.inflate import TooLarge as InflatesTooLarge
from ctxdoctor.receiver.ingest import Accepted, Ingest
from ctxdoctor.receiver.sink import SinkClosed

PATH = "/v1/traces"
_PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
_JSON_TYPES = frozenset({"application/json"})
_H2_PREFACE = b"PRI * HTTP/2.0"
# gRPC status codes used in google.rpc.Status bodies.
_INVALID_ARGUMENT = 3
_NOT_FOUND = 5
_RESOURCE_EXHAUSTED = 8
_UNIMPLEMENTED = 12
_UNAVAILABLE = 14
_CHUNK = 1 << 16
_MAX_CHUNK_LINE = 4096
#: http.client's limits on request headers.
_MAX_HEADER_LINE = 65536
_MAX_HEADERS = 100
#: A header line the ``email`` parser would store as (name, value with leading blanks removed).
_SIMPLE_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t\x20-\x7e]*)\r\n")
#: A media type (``type/subtype``): the one header value an error repeats, because it is what a
#: misconfigured exporter gets wrong and it cannot hold a secret in that shape.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,40}/[a-z0-9][a-z0-9!#$&^_.+-]{0,60}")
#: Connections the kernel queues before they are accepted (the standard library's 5 reset or
#: delayed a burst of exporters); the kernel caps it at net.core.somaxconn.
BACKLOG = 1024


#: (Unix second, its HTTP date): see ``_Handler.date_time_string``.
_date_cache: tuple[int, str] = (0, "")


class TooLarge(Exception):
    pass


class _BodyError(Exception):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: HttpServer) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # allow_reuse_address only lets a restarted server reuse a port in TIME_WAIT; it never
        # lets two live listeners share one (no SO_REUSEPORT), so "port in use" stays visible.
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished mid-request is not news; anything else is a bug worth a line,
        # but never a traceback that could echo request headers.
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        self.owner.log(f"OTLP/HTTP: internal error while serving {client_address[0]}: {type(exc).__name__}")


class HttpServer:
    #: What answers each request when not OTLP/HTTP's handler: another protocol served the same
    #: way on its own port (``receiver.zipkin``).
    handler_class: type[BaseHTTPRequestHandler] | None = None

    def __init__(
        self,
        ingest: Ingest,
        host: str,
        port: int,
        *,
        max_message_bytes: int,
        grpc_port: int | None = None,
        log: Callable[[str], None] | None = None,
        idle_timeout: float = 120.0,
        inflate: InflateBudget | None = None,
    ) -> None:
        self.ingest = ingest
        self.inflate = inflate if inflate is not None else InflateBudget()
        self.max_message_bytes = max_message_bytes
        self.grpc_port = grpc_port
        self.idle_timeout = idle_timeout
        self._log = log
        self._conns: dict[_Handler, bool] = {}  # handler -> busy
        self._conns_lock = threading.Lock()
        #: Held while a request is parsed and journaled (see ``_Handler._post``).
        self.work_lock = threading.Lock()
        self.stopping = False
        self._warned_h2: set[str] = set()
        try:
            self._httpd = _Server((host, port), self.handler_class or _Handler, self)
        except OSError:
            from ctxdoctor.receiver.grpc_server import PortInUse, bind_reason

            reason = bind_reason(host, port, "--http-port")
            raise PortInUse(f"cannot listen for OTLP/HTTP on {host}:{port}: {reason}") from None
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="otlp-http", daemon=True
        )
        self._thread.start()

    def stop(self, grace: float = 10.0) -> list[str]:
        """Stop accepting, wake idle keep-alive connections, let requests in flight finish for
        up to ``grace`` seconds, then cut the connections of those still arriving (a client that
        stalls or trickles would otherwise hold the stop forever). Returns the peers cut; each
        is in the receipts, and the log says how many."""
        self.stopping = True
        if self._thread is None:  # never started: nothing to shut down (shutdown() would wait)
            self._httpd.server_close()
            return []
        self._httpd.shutdown()
        with self._conns_lock:
            idle = [h for h, busy in self._conns.items() if not busy]
        for h in idle:
            h.wake()
        deadline = time.monotonic() + grace
        while True:
            with self._conns_lock:
                busy = [h for h, b in self._conns.items() if b]
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        cut = [h.cut(grace) for h in busy]
        if cut:
            self.log(
                f"OTLP/HTTP: stopped after a {grace:g} s grace with {len(cut)} request(s) still arriving "
                f"({', '.join(cut[:5])}{', ...' if len(cut) > 5 else ''}): cut, not answered, not kept; "
                "their exporters retry them elsewhere or later"
            )
        self._httpd.server_close()  # joins the connection threads (block_on_close)
        if self._thread is not None:
            self._thread.join()
        return cut

    # -- connection bookkeeping, called by handlers --------------------------------------------
    def _set(self, handler: _Handler, busy: bool | None) -> bool:
        """Mark a connection busy/idle (None: gone). False when a new request must not start."""
        with self._conns_lock:
            if busy is None:
                self._conns.pop(handler, None)
                return True
            if busy and self.stopping:
                return False
            self._conns[handler] = busy
            return True

    def grpc_client_seen(self, peer: str) -> None:
        host = peer.rsplit(":", 1)[0]
        if host in self._warned_h2:
            return
        self._warned_h2.add(host)
        where = f" is on port {self.grpc_port}" if self.grpc_port else " needs the gRPC port"
        self.log(
            f"a gRPC client ({peer}) connected to the OTLP/HTTP port {self.port}; OTLP/gRPC{where} "
            "(or set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf to use this one)"
        )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "ctxdoctor"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.owner = self.server.owner
        self._cut = False
        self.connection.settimeout(self.owner.idle_timeout)
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.owner._set(self, False)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._set(self, None)

    def wake(self) -> None:
        """Unblock a handler waiting for the next request on an idle keep-alive connection."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RD)

    def cut(self, grace: float) -> str:
        """End a request still arriving when the stop's grace ran out: receipted here, and the
        handler, woken by the closed socket, writes nothing more about it."""
        self._cut = True
        self.owner.ingest.refuse(
            protocol=getattr(self, "_protocol", "http/unknown"),
            peer=self.peer,
            compression=None,
            nbytes=0,
            arrived=time.time(),
            status=f"cut: still arriving when the receiver stopped ({grace:g} s grace); not answered, not kept",
        )
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        return self.peer

    def _client_gone(self) -> bool:
        """Whether the client closed its end before its answer: the answer will not reach it."""
        with contextlib.suppress(OSError, ValueError):
            ready, _, _ = select.select([self.connection], [], [], 0)
            if ready:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        return False

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header of every response: formatting it costs ~2% of a request's time, and
        # it only changes once a second.
        if timestamp is not None:
            return super().date_time_string(timestamp)
        global _date_cache
        now = int(time.time())
        second, text = _date_cache
        if second != now:
            text = super().date_time_string(now)
            _date_cache = (now, text)
        return text

    def log_message(self, format: str, *args: Any) -> None:
        pass  # access logs would drown the live view; the receipts sidecar records every request

    @property
    def peer(self) -> str:
        host, port = self.client_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # -- request loop --------------------------------------------------------------------------
    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if self.raw_requestline.startswith(_H2_PREFACE):
            self._refuse_http2()
            return
        if not self.owner._set(self, True):
            # Shutting down: the request is not read, so the client will retry it elsewhere.
            self.close_connection = True
            return
        try:
            if len(self.raw_requestline) > 65536:
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            self._body: str | int = "unread"
            self._drain_deadline: float | None = None
            if not self.parse_request():
                return
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self._method_not_allowed()
            else:
                method()
            self.wfile.flush()
        finally:
            if self.owner.stopping:
                self.close_connection = True
            self.owner._set(self, False)

    def parse_request(self) -> bool:
        """``BaseHTTPRequestHandler.parse_request`` of Python 3.11, unchanged except that simple
        header blocks skip the ``email`` parser (see ``_read_headers``), which took ~15% of a
        request's time under load."""
        self.command = None  # type: ignore[assignment]  # set in case of error on the first line
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1")
        requestline = requestline.rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if len(words) == 0:
            return False

        if len(words) >= 3:  # Enough to determine protocol version
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                base_version_number = version.split("/", 1)[1]
                version_number = base_version_number.split(".")
                if len(version_number) != 2:
                    raise ValueError
                if any(not component.isdigit() for component in version_number):
                    raise ValueError("non digit in http version")
                if any(len(component) > 10 for component in version_number):
                    raise ValueError("unreasonable length http version")
                numbers = int(version_number[0]), int(version_number[1])
            except (ValueError, IndexError):
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            if numbers >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if numbers >= (2, 0):
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({base_version_number})")
                return False
            self.request_version = version

        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path

        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")  # Reduce to a single /

        try:
            self.headers = self._read_headers()
        except http.client.LineTooLong as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(err))
            return False
        except http.client.HTTPException as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(err))
            return False

        conntype = self.headers.get("Connection", "")
        if conntype.lower() == "close":
            self.close_connection = True
        elif conntype.lower() == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = self.headers.get("Expect", "")
        if (
            expect.lower() == "100-continue"
            and self.protocol_version >= "HTTP/1.1"
            and self.request_version >= "HTTP/1.1"
        ):
            return bool(self.handle_expect_100())
        return True

    def _read_headers(self) -> http.client.HTTPMessage:
        """``http.client.parse_headers``: the same limits, errors and resulting message. When
        every line is ``Name: value`` CRLF with a token name and a printable ASCII value (what
        exporters send), the message is built directly, as the ``email`` parser would build it;
        anything else goes through that parser."""
        lines: list[bytes] = []
        rfile = self.rfile
        while True:
            line = rfile.readline(_MAX_HEADER_LINE + 1)
            if len(line) > _MAX_HEADER_LINE:
                raise http.client.LineTooLong("header line")
            lines.append(line)
            if len(lines) > _MAX_HEADERS:
                raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
            if line in (b"\r\n", b"\n", b""):
                break
        if lines[-1] == b"\r\n":
            msg = self.MessageClass()
            match = _SIMPLE_HEADER.fullmatch
            for line in lines[:-1]:
                m = match(line)
                if m is None:
                    break
                msg.set_raw(m[1].decode("ascii"), m[2].decode("ascii"))
            else:
                msg.set_payload("")
                return msg
        hstring = b"".join(lines).decode("iso-8859-1")
        return email.parser.Parser(_class=self.MessageClass).parsestr(hstring)

    def _refuse_http2(self) -> None:
        """Answer a gRPC client's first call with a gRPC error naming the right port.

        Speaks just enough HTTP/2 for that: the server preface, then, for the first request
        stream, a trailers-only response (``grpc-status`` UNAVAILABLE with the reason in
        ``grpc-message``), then GOAWAY. A client that sends no request in time gets the GOAWAY
        alone, whose debug text says the same.
        """
        self.owner.grpc_client_seen(self.peer)
        where = f"use port {self.owner.grpc_port}" if self.owner.grpc_port else "use the OTLP/gRPC port"
        reason = f"this is ctxdoctor's OTLP/HTTP port; for OTLP/gRPC {where}"
        stream = 0
        try:
            # Clients wait for the server's SETTINGS before they send a request.
            self.wfile.write(_h2_frame(0x4, 0, 0, b""))
            self.wfile.flush()
            self.connection.settimeout(2.0)
            if self.rfile.read(8) == b"\r\nSM\r\n\r\n":  # the rest of the client preface
                stream = self._first_h2_stream()
        except (OSError, ValueError):
            stream = 0
        out = b""
        if stream:
            out += _h2_frame(0x4, 0x1, 0, b"")  # ACK the client's SETTINGS
            out += _h2_frame(0x1, 0x5, stream, _grpc_error_headers(14, reason))  # END_STREAM|END_HEADERS
        out += _h2_frame(0x7, 0, 0, struct.pack(">II", stream, 0) + reason.encode())  # GOAWAY NO_ERROR
        try:
            self.wfile.write(out)
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def _first_h2_stream(self) -> int:
        """Read frames until the first HEADERS frame; return its stream id (0: none seen)."""
        for _ in range(16):
            head = self.rfile.read(9)
            if len(head) < 9:
                return 0
            length = int.from_bytes(head[:3], "big")
            ftype = head[3]
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            if length > 1 << 16:
                return 0
            self.rfile.read(length)
            if ftype == 0x1:
                return stream
        return 0

    # -- methods -------------------------------------------------------------------------------
    # The flow of a request is the same for every protocol served over HTTP (OTLP here, Zipkin in
    # receiver/zipkin.py): check path, media type and compression, read and inflate the body
    # within the budget, parse and journal it under the work lock, answer. A protocol changes
    # only the hooks below the flow: where it listens, which media types it takes, how it parses
    # a body and how it answers.

    #: Where requests go and what they carry, for the "no such path" answer.
    _path = PATH
    _payload = "OTLP/HTTP traces"
    #: The server's name in the log.
    _server_name = "OTLP/HTTP"
    #: The media type assumed when a request has no Content-Type ("": none, refused).
    _default_type = ""
    _accepted_types = "application/x-protobuf or application/json"

    def do_POST(self) -> None:
        try:
            self._post()
        except (OSError, TimeoutError):
            self.close_connection = True
        except Exception as exc:
            # A bug, not bad input: one line (a traceback could quote span attributes), and the
            # exporter is told to retry.
            self.owner.log(f"{self._server_name}: internal error ({type(exc).__name__})")
            self.close_connection = True
            self._answer_error(503, _UNAVAILABLE, f"ctxdoctor internal error ({type(exc).__name__})", "json")

    def _post(self) -> None:
        arrived = time.time()
        path = self.path.split("?", 1)[0]
        if path != self._path:
            self._drain_quietly()
            self._no_such_path(path)
            return
        ctype = (self.headers.get("Content-Type") or self._default_type).split(";", 1)[0].strip().lower()
        encoding = self._encoding(ctype)
        protocol = self._protocol = self._protocol_of(encoding)
        content_encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        compression = None if content_encoding == "identity" else content_encoding
        ingest = self.owner.ingest
        ingest.begin()
        try:

            def refuse(n: int, status: str) -> None:
                if not self._cut:  # a cut request is receipted by ``cut``
                    ingest.refuse(
                        protocol=protocol,
                        peer=self.peer,
                        compression=compression,
                        nbytes=n,
                        arrived=arrived,
                        status=status,
                    )

            if encoding is None:
                # A header value is repeated only when it is a plain media type: errors never
                # echo what could be a secret.
                self._drain_quietly()
                shown = repr(ctype) if _MEDIA_TYPE.fullmatch(ctype) else "(none)" if not ctype else "(not a media type)"
                refuse(0, f"unsupported content type {shown}")
                self._answer_error(
                    415,
                    _INVALID_ARGUMENT,
                    f"unsupported Content-Type {shown}: send {self._accepted_types}",
                    "json",
                )
                return
            if content_encoding not in ("identity", "gzip", "x-gzip", "deflate"):
                # Its value is not repeated: errors never echo a header value.
                self._drain_quietly()
                compression = "unsupported"
                refuse(0, "unsupported content encoding")
                self._answer_error(
                    415,
                    _INVALID_ARGUMENT,
                    "unsupported Content-Encoding: send gzip (or deflate) or no compression",
                    encoding,
                )
                return
            limit = self.owner.max_message_bytes
            try:
                # A compressed body is never much larger than its content; the real check is
                # on the decompressed size.
                wire = self._read_body(limit if compression is None else limit + (1 << 20))
            except TooLarge as exc:
                self._drain_quietly()
                refuse(0, f"too large: {exc}")
                self._answer_error(413, _RESOURCE_EXHAUSTED, str(exc), encoding)
                return
            except _BodyError as exc:
                self._drain_quietly()
                refuse(0, f"invalid: {exc}")
                self._answer_error(400, _INVALID_ARGUMENT, str(exc), encoding)
                return
            if compression is None:
                self._journal(wire, wire, encoding, protocol, compression, arrived, refuse)
                return
            # Inflated within the receiver's budget: a gzip bomb is refused after holding a few
            # MiB, and only so many inflate at once.
            wbits = 16 + zlib.MAX_WBITS if content_encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
            try:
                with self.owner.inflate.inflate(wire, wbits, limit) as body:
                    self._journal(wire, body, encoding, protocol, compression, arrived, refuse)
            except InflatesTooLarge as exc:
                message = f"request body {exc}"
                refuse(0, f"too large: {message}")
                self._answer_error(413, _RESOURCE_EXHAUSTED, message, encoding)
            except Corrupt as exc:
                message = f"body is not valid {content_encoding}: {exc}"
                refuse(0, f"invalid: {message}")
                self._answer_error(400, _INVALID_ARGUMENT, message, encoding)
        finally:
            ingest.end()

    def _journal(
        self,
        wire: bytes,
        body: bytes,
        encoding: str,
        protocol: str,
        compression: str | None,
        arrived: float,
        refuse: Callable[[int, str], None],
    ) -> None:
        """Parse, journal and answer one request whose body was read (and inflated)."""
        ingest = self.owner.ingest
        # One connection at a time parses and journals: with several connections, threads
        # that take turns on the GIL in the middle of this CPU-bound work cost ~25% more CPU
        # per request than one thread doing it (bench/README, listen). Nothing here waits on
        # the client, so a slow client never holds the others up; answers go out after.
        failed: tuple[str, Exception] | None = None
        res = Accepted(0, 0, "")
        with self.owner.work_lock:
            try:
                req, raw, pre_rejected, pre_problem = self._parse(body, encoding)
            except BadRequest as exc:
                failed = ("invalid", exc)
            else:
                try:
                    if req is not None:
                        res = ingest.accept(
                            req,
                            raw=raw,
                            protocol=protocol,
                            peer=self.peer,
                            compression=compression,
                            nbytes=len(wire),
                            arrived=arrived,
                            pre_rejected=pre_rejected,
                            pre_problem=pre_problem,
                            body=body,
                        )
                except (SinkClosed, OSError) as exc:
                    failed = ("unavailable", exc)
        if failed is not None:
            kind, err = failed
            if kind == "invalid":
                refuse(len(wire), f"invalid: {err}")
                self._answer_error(400, _INVALID_ARGUMENT, str(err), encoding)
            elif isinstance(err, SinkClosed):
                self._answer_error(
                    503, _UNAVAILABLE, "ctxdoctor is shutting down; retry later", encoding, retry_after=True
                )
            else:
                self._answer_error(503, _UNAVAILABLE, f"ctxdoctor {err}; retry later", encoding, retry_after=True)
            return
        gone = self._cut or self._client_gone()
        sent = self._answer_accepted(res, encoding)
        if (gone or not sent) and res.spans:
            # Kept but never acknowledged: said in the receipts, and an exporter's retry of
            # the same body is recognised and not written twice (see ``Ingest.unanswered``).
            ingest.unanswered(protocol=protocol, peer=self.peer, body=body, spans=res.spans)

    def _method_not_allowed(self) -> None:
        path = self.path.split("?", 1)[0]
        self._drain_quietly()
        if path != self._path:
            self._no_such_path(path)
        else:
            self._answer_error(405, _UNIMPLEMENTED, f"method {self.command} not allowed: use POST", "json", allow=True)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _method_not_allowed

    def _no_such_path(self, path: str) -> None:
        self._answer_error(404, _NOT_FOUND, f"no such path {path!r}: {self._payload} go to POST {self._path}", "json")

    # -- the protocol: OTLP/HTTP ---------------------------------------------------------------
    def _encoding(self, ctype: str) -> str | None:
        """How a body of this media type is parsed (None: refused)."""
        return "protobuf" if ctype in _PROTOBUF_TYPES else "json" if ctype in _JSON_TYPES else None

    def _protocol_of(self, encoding: str | None) -> str:
        """The protocol's name in receipts and counts."""
        return f"http/{encoding or 'unknown'}"

    def _parse(self, body: bytes, encoding: str) -> tuple[ExportTraceServiceRequest | None, bytes | None, int, str]:
        """The request (None: nothing to journal), its protobuf encoding when it came as
        protobuf, the spans rejected before it (unreadable ids) and the first such problem.
        Raises ``BadRequest``."""
        if encoding == "protobuf":
            return parse_protobuf(body), body, 0, ""
        req, pre_rejected, pre_problem = parse_json(body)
        return req, None, pre_rejected, pre_problem

    def _answer_accepted(self, res: Accepted, encoding: str) -> bool:
        """Acknowledge a journaled request; False when the answer could not be written."""
        resp = ExportTraceServiceResponse()
        if res.rejected:
            resp.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=res.rejected, error_message=res.error_message)
            )
        if encoding == "protobuf":
            return self._send(200, resp.SerializeToString(), "application/x-protobuf")
        doc: dict[str, Any] = {}
        if res.rejected:
            doc["partialSuccess"] = {
                "rejectedSpans": str(res.rejected),
                "errorMessage": res.error_message,
            }
        return self._send(200, msgspec.json.encode(doc), "application/json")

    # -- bodies --------------------------------------------------------------------------------
    # ``_body``: "unread" (nothing of it consumed yet), "read" (fully consumed), "chunked" (a
    # chunked body abandoned part-way), or an int: bytes of a Content-Length body left unread.

    def _read_body(self, limit: int) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if te:
            if te != "chunked":
                raise _BodyError("unsupported Transfer-Encoding (only chunked is)")
            return self._read_chunked(limit)
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self._body = "read"
            return b""
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            raise _BodyError("bad Content-Length (not a non-negative integer)") from None
        if length > limit:
            self._body = length
            raise TooLarge(f"request body of {length} bytes is over the limit of {limit} bytes (--max-message-mib)")
        data = self.rfile.read(length)
        self._body = "read"
        if len(data) < length:
            raise _BodyError(f"body ended after {len(data)} of {length} bytes")
        return data

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        rfile = self.rfile
        self._body = "chunked"
        while True:
            line = rfile.readline(_MAX_CHUNK_LINE)
            if not line.endswith(b"\n"):
                raise _BodyError("malformed chunked body (chunk size line)")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError("malformed chunked body (chunk size is not hex)") from None
            if size == 0:
                # Trailers, then the blank line that ends the body.
                while True:
                    t = rfile.readline(_MAX_CHUNK_LINE)
                    if t in (b"\r\n", b"\n", b""):
                        break
                self._body = "read"
                return b"".join(parts)
            total += size
            if total > limit:
                self._drain_deadline = time.monotonic() + 10.0
                self._skip(size + 2)  # this chunk and its CRLF; the rest is drained later
                raise TooLarge(f"request body is over the limit of {limit} bytes (--max-message-mib)")
            data = rfile.read(size)
            if len(data) < size:
                raise _BodyError("chunked body ended early")
            parts.append(data)
            if rfile.readline(_MAX_CHUNK_LINE) not in (b"\r\n", b"\n"):
                raise _BodyError("malformed chunked body (missing CRLF after a chunk)")

    def _skip(self, n: int) -> None:
        deadline = self._drain_deadline
        while n > 0:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("gave up draining an unwanted body")
            got = self.rfile.read(min(n, _CHUNK))
            if not got:
                return
            n -= len(got)

    def _drain_quietly(self) -> None:
        """Read and discard the rest of an unwanted body so the client sees our answer rather
        than a reset connection; give up after a few seconds. The connection is closed after."""
        self.close_connection = True
        state = self._body
        self._body = "read"
        self._drain_deadline = time.monotonic() + 10.0
        try:
            self.connection.settimeout(5.0)
            if state == "unread":
                te = (self.headers.get("Transfer-Encoding") or "").strip().lower()
                if te == "chunked":
                    state = "chunked"
                else:
                    text = self.headers.get("Content-Length") or "0"
                    state = int(text) if text.isdigit() else 0
            if state == "chunked":
                while True:
                    line = self.rfile.readline(_MAX_CHUNK_LINE)
                    if not line:
                        return
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline(_MAX_CHUNK_LINE)
                        return
                    self._skip(size + 2)
            elif isinstance(state, int):
                self._skip(state)
        except (OSError, ValueError):
            pass

    # -- responses -----------------------------------------------------------------------------
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
        """Answer an error as OTLP does: a ``google.rpc.Status`` in the request's encoding."""
        if encoding == "protobuf":
            body = status_pb2.Status(code=grpc_code, message=message).SerializeToString()
            ctype = "application/x-protobuf"
        else:
            body = msgspec.json.encode({"code": grpc_code, "message": message})
            ctype = "application/json"
        headers = []
        if retry_after:
            headers.append(("Retry-After", "1"))
        if allow:
            headers.append(("Allow", "POST"))
        self._send(http_code, body, ctype, headers)

    def _send(self, code: int, body: bytes, ctype: str, headers: list[tuple[str, str]] | None = None) -> bool:
        """Answer; False when the answer could not be written (the client is gone)."""
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers or ():
                self.send_header(k, v)
            if self.close_connection or self.owner.stopping:
                self.send_header("Connection", "close")
                self.close_connection = True
            # Status line, headers and body in one write: two small writes on one connection
            # stall on Nagle's algorithm and the client's delayed ACK.
            buffer: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]
            buffer.append(b"\r\n")
            if self.command != "HEAD":
                buffer.append(body)
            self.flush_headers()
        except OSError:
            self.close_connection = True
            return False
        return True


def _h2_frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream.to_bytes(4, "big") + payload


def _hpack_literal(name: bytes, value: bytes) -> bytes:
    """A header as an HPACK literal without indexing, new name, no Huffman (short strings)."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes((len(name),)) + name + bytes((len(value),)) + value


def _grpc_error_headers(code: int, message: str) -> bytes:
    from urllib.parse import quote

    return (
        b"\x88"  # :status 200 (static table entry 8)
        + _hpack_literal(b"content-type", b"application/grpc")
        + _hpack_literal(b"grpc-status", str(code).encode())
        + _hpack_literal(b"grpc-message", quote(message, safe=" ;:/'").encode()[:126])
    )
