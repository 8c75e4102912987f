"""The load generator of ``bench/listen.py``: pre-serialized 512-span batches over N connections.

Runs in its own process (``python -m bench.listen_load ...``) so it does not share a GIL with
the server it measures. Every batch is the same realistic 512-span ``ExportTraceServiceRequest``
(one line of the ``bench/dumpgen.py`` traffic) with the batch number n written into it, as three
little-endian bytes in two places:

- span ids are ``<n:3 bytes LE> 00 <index:4 bytes>`` and trace ids carry n too, so each span id
  is unique across the run and the harness can tell from a dump which acknowledged batch is
  missing or duplicated;
- bits 32-55 of every timestamp are n (on a 2024 base), so batch n lives in its own 4.3 s slot of
  time. Without this every batch would carry the same timestamps, and thousands of copies of the
  same spans running at the same instant in the same processes is a pathological input for any
  analysis that sweeps over concurrent spans (the live view's and the final report's).

Both places hold the same bytes, so a batch is one ``bytes.join`` over the template pre-split at
the token (~30 us for 180 kB): the client is not the bottleneck.

Writes a JSON result: which batch numbers were acknowledged, and what failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import dumpgen

SPANS_PER_BATCH = dumpgen.SPANS_PER_LINE
#: The top byte of every timestamp: 0x18 << 56 ns is 2024-10-20.
TIME_TOP = 0x18
GRPC_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
#: Bounds the run by count as well as time (at 1M spans/s this is over ten minutes of traffic);
#: batch numbers must also fit in three bytes.
MAX_BATCHES = 1_500_000


def _candidate_tokens(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.getrandbits(24).to_bytes(3, "little") for _ in range(16)]


def build_template(seed: int = dumpgen.DEFAULT_SEED) -> list[bytes]:
    """One 512-span request, split where the batch number goes (see the module docstring)."""
    recs = next(dumpgen.Generator(seed).lines(SPANS_PER_BATCH * 8))
    assert len(recs) == SPANS_PER_BATCH
    t0 = min(r[5] for r in recs)
    rng = random.Random(seed)
    for token in _candidate_tokens(seed):
        tok = int.from_bytes(token, "little")
        time_base = (TIME_TOP << 56) | (tok << 32)

        def slot(t: int, base: int = time_base) -> int:
            assert 0 <= t - t0 < 1 << 32, "a batch must fit in 4.3 s"
            return base | (t - t0)

        def span_id(i: int, token: bytes = token) -> int:
            return int.from_bytes(token + b"\x00" + i.to_bytes(4, "big"), "big")

        index = {r[1]: i for i, r in enumerate(recs)}
        traces: dict[int, int] = {}
        out = []
        for i, r in enumerate(recs):
            tid = traces.setdefault(r[0], int.from_bytes(rng.randbytes(12) + token + b"\x01", "big"))
            parent = span_id(index[r[2]]) if r[2] in index else r[2]
            events = tuple(dumpgen.Event(slot(e.time), e.name, e.attrs) for e in r[9])
            out.append((tid, span_id(i), parent, r[3], r[4], slot(r[5]), slot(r[6]), r[7], r[8], events, *r[10:]))
        _, proto = dumpgen.encode_line(out)
        parts = proto.split(token)
        if _check(parts, 1234567):
            return parts
    raise RuntimeError("every candidate token also occurs elsewhere in the template")


def _check(parts: list[bytes], n: int) -> bool:
    """Whether substituting ``n`` gives exactly the ids and times it should (the token occurs
    nowhere else)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest.FromString(batch(parts, n))
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    ids = sorted(int.from_bytes(s.span_id, "big") for s in spans)
    return ids == list(batch_span_ids(n)) and all(
        s.start_time_unix_nano >> 32 == (TIME_TOP << 24) | n and s.end_time_unix_nano >> 32 == (TIME_TOP << 24) | n
        for s in spans
    )


def batch(parts: list[bytes], n: int) -> bytes:
    return n.to_bytes(3, "little").join(parts)


def batch_span_ids(n: int) -> range:
    """The span ids (as ints) of batch ``n``, in order."""
    first = int.from_bytes(n.to_bytes(3, "little") + bytes(5), "big")
    return range(first, first + SPANS_PER_BATCH)


def batch_of(span_id: int) -> tuple[int, int]:
    """(batch number, index in the batch) of a span id; (0, 0) if it is not one of ours."""
    b = span_id.to_bytes(8, "big")
    if b[3] != 0:
        return 0, 0
    return int.from_bytes(b[:3], "little"), int.from_bytes(b[4:], "big")


def _rejected(body: bytes) -> int:
    if not body:
        return 0
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    return ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans


class State:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.next = 0
        self.acked: list[int] = []
        self.partial: list[tuple[int, int]] = []
        self.failed: list[int] = []
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []

    def take(self) -> int | None:
        if time.monotonic() >= self.deadline or self.next >= MAX_BATCHES:
            return None
        self.next += 1
        return self.next

    def done(self, n: int, rejected: int, error: str | None, latency: float) -> None:
        if error is not None:
            self.failed.append(n)
            self.errors[error] += 1
        elif rejected:
            self.partial.append((n, rejected))
        else:
            self.acked.append(n)
            self.latencies.append(latency)


async def grpc_worker(port: int, template: list[bytes], st: State) -> None:
    import grpc

    # A local subchannel pool gives every channel its own TCP connection, like separate workers.
    options = [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.max_receive_message_length", 64 << 20),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = channel.unary_unary(GRPC_METHOD, request_serializer=None, response_deserializer=None)
        while (n := st.take()) is not None:
            t0 = time.monotonic()
            try:
                resp = await call(batch(template, n), timeout=30)
            except grpc.aio.AioRpcError as exc:
                st.done(n, 0, f"grpc {exc.code().name}: {exc.details()}"[:200], 0.0)
                continue
            st.done(n, _rejected(resp), None, time.monotonic() - t0)


async def _http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> tuple[int, bytes, bool]:
    writer.write(head)
    writer.write(body)
    await writer.drain()
    status = await reader.readline()
    if not status:
        raise ConnectionError("server closed the connection")
    code = int(status.split()[1])
    length, close, chunked = 0, False, False
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value == "close":
            close = True
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
    if chunked:
        parts = []
        while size := int((await reader.readline()).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readline()
        await reader.readline()
        data = b"".join(parts)
    else:
        data = await reader.readexactly(length) if length else b""
    return code, data, close


async def http_worker(port: int, template: list[bytes], st: State) -> None:
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        while (n := st.take()) is not None:
            body = batch(template, n)
            head = (
                f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-protobuf\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = await asyncio.open_connection("127.0.0.1", port)
                code, data, close = await asyncio.wait_for(_http_exchange(*conn, head, body), timeout=30)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                st.done(n, 0, f"http {type(exc).__name__}: {exc}"[:200], 0.0)
                if conn is not None:
                    conn[1].close()
                conn = None
                await asyncio.sleep(0.05)
                continue
            if close:
                conn[1].close()
                conn = None
            if code == 200:
                st.done(n, _rejected(data), None, time.monotonic() - t0)
            else:
                st.done(n, 0, f"http {code}", 0.0)
    finally:
        if conn is not None:
            conn[1].close()


async def run(transport: str, port: int, connections: int, duration: float, template: list[bytes]) -> State:
    st = State(time.monotonic() + duration)
    worker = grpc_worker if transport == "grpc" else http_worker
    await asyncio.gather(*(worker(port, template, st) for _ in range(connections)))
    return st


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="load generator for bench/listen.py")
    ap.add_argument("--transport", choices=("grpc", "http"), required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=dumpgen.DEFAULT_SEED)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    template = build_template(args.seed)
    started = time.time()
    t0 = time.monotonic()
    st = asyncio.run(run(args.transport, args.port, args.connections, args.duration, template))
    elapsed = time.monotonic() - t0
    lat = sorted(st.latencies)
    result = {
        "transport": args.transport,
        "connections": args.connections,
        "duration_s": elapsed,
        "started": started,
        "spans_per_batch": SPANS_PER_BATCH,
        "batch_bytes": len(batch(template, 1)),
        "sent": st.next,
        "acked": st.acked,
        "partial": st.partial,
        "failed": st.failed,
        "errors": dict(st.errors),
        "acked_spans": len(st.acked) * SPANS_PER_BATCH,
        "latency_p50_ms": lat[len(lat) // 2] * 1e3 if lat else None,
        "latency_p99_ms": lat[int(len(lat) * 0.99)] * 1e3 if lat else None,
    }
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
