"""OTLP/gRPC: ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` on grpcio.

A generic handler receives the raw message bytes (no request deserializer) so that a malformed
message becomes INVALID_ARGUMENT with a readable reason, instead of the INTERNAL that grpcio
answers when its own deserializer fails.

grpcio's own decompression is switched off: with it on, nothing tells the handler whether a
message came compressed (grpc-encoding is stripped from the metadata), and the receipts record
compression. A compressed message is recognisable by its first bytes, because a protobuf
``ExportTraceServiceRequest`` starts with the tag of field 1 (0x0a) and never with the gzip magic
(0x1f 0x8b) or a zlib header (0x78 ..). The size limit applies after decompression, as the OTLP
specification recommends (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import errno
import os
import socket
import time
import zlib
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from ctxdoctor.receiver.decode import BadRequest, parse_protobuf
from ctxdoctor.receiver.inflate import Corrupt, InflateBudget, TooLarge
from ctxdoctor.receiver.ingest import Ingest
from ctxdoctor.receiver.sink import SinkClosed

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class _Abort(Exception):
    """End the RPC with this status (``ServicerContext.abort`` raises a bare ``Exception``,
    which could not be told apart from a bug)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_OK = ExportTraceServiceResponse().SerializeToString()


class PortInUse(OSError):
    pass


def _peer(context: grpc.ServicerContext) -> str:
    peer = context.peer() or "unknown"
    # "ipv4:127.0.0.1:5312" / "ipv6:[::1]:5312" -> "127.0.0.1:5312"
    return peer.split(":", 1)[1] if peer.startswith(("ipv4:", "ipv6:")) else peer


def _compression(data: bytes) -> tuple[str | None, int]:
    """(compression, zlib wbits) of a message grpcio left compressed, by its first bytes."""
    if data[:2] == b"\x1f\x8b":
        return "gzip", 16 + zlib.MAX_WBITS
    if data[:1] == b"\x78" and len(data) > 1 and (data[0] << 8 | data[1]) % 31 == 0:
        return "deflate", zlib.MAX_WBITS
    return None, 0


class GrpcServer:
    def __init__(
        self,
        ingest: Ingest,
        host: str,
        port: int,
        *,
        max_message_bytes: int,
        workers: int = 16,
        inflate: InflateBudget | None = None,
    ) -> None:
        self.ingest = ingest
        self.inflate = inflate if inflate is not None else InflateBudget()
        self.max_message_bytes = max_message_bytes
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otlp-grpc"),
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                # grpc enables SO_REUSEPORT by default, which lets a second listener share a port
                # silently: two receivers would each get half the traffic.
                ("grpc.so_reuseport", 0),
                ("grpc.per_message_decompression", 0),
            ],
            maximum_concurrent_rpcs=None,
        )
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    self._export, request_deserializer=None, response_serializer=None
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise PortInUse(
                f"cannot listen for OTLP/gRPC on {host}:{port}: {bind_reason(host, port, '--port')}"
            ) from exc
        if self.port == 0:  # older grpcio reports a failed bind this way
            raise PortInUse(f"cannot listen for OTLP/gRPC on {host}:{port}: {bind_reason(host, port, '--port')}")

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float) -> None:
        """Stop accepting; let in-flight RPCs finish (up to ``grace`` seconds)."""
        self._server.stop(grace).wait()

    def _export(self, data: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return self._export_checked(data, context)
        except _Abort as a:
            context.abort(a.code, a.message)
        except Exception as exc:
            # A bug, not bad input. grpcio would log a traceback whose message could quote span
            # attributes; say what broke in one line instead, and let the exporter retry.
            self.ingest.on_internal_error(f"OTLP/gRPC: internal error ({type(exc).__name__})")
            context.abort(grpc.StatusCode.UNAVAILABLE, f"ctxdoctor internal error ({type(exc).__name__})")

    def _export_checked(self, data: bytes, context: grpc.ServicerContext) -> Any:
        arrived = time.time()
        ingest = self.ingest
        ingest.begin()
        try:
            peer = _peer(context)
            compression, wbits = _compression(data)
            if compression is None:
                return self._journal(data, data, None, peer, arrived, context)
            try:
                with self.inflate.inflate(data, wbits, self.max_message_bytes) as body:
                    return self._journal(data, body, compression, peer, arrived, context)
            except TooLarge as exc:
                code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, f"message {exc}"
            except Corrupt as exc:
                if compression == "deflate":
                    # Not zlib after all: an (odd) uncompressed message that starts like it.
                    return self._journal(data, data, None, peer, arrived, context)
                code = grpc.StatusCode.INVALID_ARGUMENT
                message = (
                    "gzip message is truncated" if str(exc) == "truncated" else f"message is not valid gzip: {exc}"
                )
            ingest.refuse(
                protocol="grpc", peer=peer, compression=compression, nbytes=len(data), arrived=arrived, status=message
            )
            raise _Abort(code, message)
        finally:
            ingest.end()

    def _journal(
        self,
        data: bytes,
        body: bytes,
        compression: str | None,
        peer: str,
        arrived: float,
        context: grpc.ServicerContext,
    ) -> Any:
        ingest = self.ingest
        try:
            req = parse_protobuf(body)
        except BadRequest as exc:
            ingest.refuse(
                protocol="grpc",
                peer=peer,
                compression=compression,
                nbytes=len(data),
                arrived=arrived,
                status=f"invalid: {exc}",
            )
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        try:
            res = ingest.accept(
                req,
                raw=body,
                protocol="grpc",
                peer=peer,
                compression=compression,
                nbytes=len(data),
                arrived=arrived,
                body=body,
            )
        except SinkClosed:
            raise _Abort(grpc.StatusCode.UNAVAILABLE, "ctxdoctor is shutting down; retry later") from None
        except OSError as exc:
            raise _Abort(grpc.StatusCode.UNAVAILABLE, f"ctxdoctor {exc}; retry later") from None
        if res.spans and not context.is_active():
            # The client gave up (deadline, cancel) while its request was being kept: the answer
            # will not reach it, and its exporter retries.
            ingest.unanswered(protocol="grpc", peer=peer, body=body, spans=res.spans)
        if res.rejected:
            return ExportTraceServiceResponse(
                partial_success=ExportTracePartialSuccess(rejected_spans=res.rejected, error_message=res.error_message)
            ).SerializeToString()
        return _OK


def bind_reason(host: str, port: int, flag: str) -> str:
    """Why binding failed, in words. grpcio does not say; a plain socket bind shows the errno."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    err = None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            err = exc.errno
    if err == errno.EADDRINUSE or err is None:
        return f"the port is already in use (another collector or ctxdoctor listen?); pick another with {flag}"
    if err in (errno.EACCES, errno.EPERM):
        return f"binding port {port} needs privileges; pick a port above 1023 with {flag}"
    if err == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine (--host)"
    return os.strerror(err)
