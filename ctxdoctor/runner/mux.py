"""One loopback port that speaks both OTLP transports, in front of the receiver's two ports.

Why: ``ctxdoctor run`` has to hand a command a single endpoint before knowing which exporter the
command will use. Python's SDK defaults to OTLP/gRPC, Node.js ``sdk-node`` to OTLP/HTTP, and an
app may pick either in code; the standard variables cannot say "gRPC here, HTTP there" per
runtime. A gRPC client over plaintext opens with the HTTP/2 preface (``PRI * HTTP/2.0``), an
OTLP/HTTP client with an HTTP/1.1 request line (``POST /v1/traces``), so the first three bytes
of a connection tell them apart; the connection is then spliced to the matching port.

The receiver keeps owning everything about OTLP (status codes, limits, the dump); this only
moves bytes, so both transports behave here exactly as on their own ports.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

#: First bytes of the HTTP/2 connection preface a gRPC client sends without TLS.
_H2 = b"PRI"
_CHUNK = 1 << 16
#: A TLS ClientHello starts with a handshake record (content type 22).
_TLS_HANDSHAKE = b"\x16"
#: A client that connects and sends nothing is dropped after this long.
_FIRST_BYTES_TIMEOUT = 30.0


class PortMux:
    """Listen on ``host:port`` (0 = a free port); route gRPC to ``grpc_port``, the rest to ``http_port``."""

    def __init__(
        self,
        host: str,
        grpc_port: int,
        http_port: int,
        port: int = 0,
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.host = host
        self.grpc_port = grpc_port
        self.http_port = http_port
        self._log = log
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.bind((host, port))
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.routed = {"grpc": 0, "http": 0}
        self._said: set[str] = set()

    def start(self) -> PortMux:
        self._thread = threading.Thread(target=self._accept_loop, name="otlp-mux", daemon=True)
        self._thread.start()
        return self

    def stop_accepting(self) -> None:
        """Refuse new connections; spliced ones keep flowing so in-flight exports complete."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close(self) -> None:
        """Stop accepting and cut every connection still open (after the receiver has stopped)."""
        self.stop_accepting()
        with self._lock:
            conns = list(self._open)
            self._open.clear()
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    # -- internals -----------------------------------------------------------------------------
    def _say_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
        if self._log is not None:
            with contextlib.suppress(Exception):
                self._log(message)

    def _untrack(self, *socks: socket.socket) -> None:
        with self._lock:
            for s in socks:
                self._open.discard(s)
        for s in socks:
            s.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._route, args=(client,), name="otlp-mux-conn", daemon=True).start()

    def _route(self, client: socket.socket) -> None:
        with self._lock:
            self._open.add(client)
        try:
            client.settimeout(_FIRST_BYTES_TIMEOUT)
            head = b""
            # Peek, so the upstream server sees the connection from its very first byte.
            while len(head) < len(_H2):
                head = client.recv(len(_H2), socket.MSG_PEEK)
                if not head:
                    raise ConnectionError("closed before sending anything")
                if not _H2.startswith(head):
                    break
                if len(head) < len(_H2):
                    threading.Event().wait(0.005)
            client.settimeout(None)
            if head[:1] == _TLS_HANDSHAKE:
                self._say_once(
                    "tls",
                    "an exporter tried TLS on the plaintext receiver and was refused (an https:// endpoint, "
                    "or OTEL_EXPORTER_OTLP_INSECURE=false honoured over the endpoint run set?)",
                )
                raise ConnectionError("TLS client")
            is_grpc = head == _H2
            port = self.grpc_port if is_grpc else self.http_port
            upstream = socket.create_connection((self.host, port), timeout=10)
            upstream.settimeout(None)
        except OSError:
            self._untrack(client)
            return
        with self._lock:
            self.routed["grpc" if is_grpc else "http"] += 1
            if self._closing:
                self._open.discard(client)
                client.close()
                upstream.close()
                return
            self._open.add(upstream)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=self._pump, args=(upstream, client), name="otlp-mux-pump", daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        self._untrack(client, upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        """Copy until EOF, then pass the half-close on; on a reset, cut both directions."""
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            return
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
