"""Parse-only OTLP sinks: the ceilings ``ctxdoctor listen`` is measured against.

``python -m bench.listen_sink --grpc-port P`` or ``--http-port P``. Each parses every
``ExportTraceServiceRequest`` it receives (so the cost of protobuf decoding is in the ceiling, as
it is in any receiver), counts its spans, and answers success; nothing is kept or written. That
is the most a Python receiver can do per second on this machine with these libraries.

- gRPC: grpcio with the same thread pool size (16) and raw-bytes generic handler as ctxdoctor's
  receiver, so the difference between the two is what ctxdoctor does with a request.
- HTTP: an asyncio HTTP/1.1 keep-alive server (stdlib only); no per-connection thread, so it is a
  generous ceiling for a threaded server.

Prints ``READY grpc=<port> http=<port>`` when listening and, on SIGTERM/SIGINT, a JSON line with
the requests and spans it parsed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
from concurrent import futures
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

GRPC_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.spans = 0
        self.bad = 0

    def parse(self, data: bytes) -> bool:
        try:
            req = ExportTraceServiceRequest.FromString(data)
        except DecodeError:
            with self.lock:
                self.bad += 1
            return False
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        with self.lock:
            self.requests += 1
            self.spans += n
        return True


def serve_grpc(port: int, counts: Counts, stop: threading.Event) -> int:
    import grpc

    def export(data: bytes, context: grpc.ServicerContext) -> bytes:
        if not counts.parse(data):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not an ExportTraceServiceRequest")
        return b""  # an empty ExportTraceServiceResponse: full success

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=None,
    )
    handler = grpc.method_handlers_generic_handler(
        GRPC_SERVICE,
        {"Export": grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)},
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"READY grpc={bound} http=0", flush=True)
    while not stop.wait(0.2):  # short waits: the signal handler that sets it runs on this thread
        pass
    server.stop(5).wait()
    return bound


_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: Counts) -> None:
    try:
        while True:
            request_line = await reader.readline()
            if not request_line:
                return
            length, chunked = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                parts = []
                while size := int((await reader.readline()).split(b";")[0], 16):
                    parts.append(await reader.readexactly(size))
                    await reader.readline()
                await reader.readline()
                body = b"".join(parts)
            else:
                body = await reader.readexactly(length)
            if counts.parse(body):
                writer.write(_OK)
            else:
                writer.write(_BAD)
                await writer.drain()
                return
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()


def serve_http(port: int, counts: Counts, stop: threading.Event) -> int:
    async def main() -> int:
        server = await asyncio.start_server(lambda r, w: _handle(r, w, counts), "127.0.0.1", port, limit=1 << 20)
        bound = server.sockets[0].getsockname()[1]
        print(f"READY grpc=0 http={bound}", flush=True)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        server.close()
        await server.wait_closed()
        return int(bound)

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="parse-only OTLP sink (the ceiling of bench/listen.py)")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--grpc-port", type=int)
    g.add_argument("--http-port", type=int)
    args = ap.parse_args(argv)
    counts = Counts()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.grpc_port is not None:
        serve_grpc(args.grpc_port, counts, stop)
    else:
        serve_http(args.http_port, counts, stop)
    result: dict[str, Any] = {"requests": counts.requests, "spans": counts.spans, "bad": counts.bad}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
