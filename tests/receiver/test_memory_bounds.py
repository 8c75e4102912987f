"""Memory bounded by bytes, not by entries: decompression in flight over both transports, and the
converter's caches. What these bound is counted by the code that holds the bytes; the whole
receiver's peak memory under the same loads is measured by ``bench/listen.py``."""

from __future__ import annotations

import http.client
import threading
import zlib
from collections import Counter
from pathlib import Path

import grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ctxdoctor.receiver import Receiver
from ctxdoctor.receiver.encode import CACHE_BYTES, Transcoder
from ctxdoctor.receiver.inflate import DEFAULT_SLOTS, KEEP_BYTES
from tests.helpers import EXPORT, assert_alive, make_request

LIMIT = 8 << 20
BOMBS = 16


def bomb(limit: int) -> bytes:
    """A request body of a few kB that inflates past ``limit`` (zeros, gzip)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(b"\0" * (limit + (1 << 20))) + c.flush()


def test_concurrent_gzip_bombs_inflate_a_few_at_a_time(tmp_path: Path) -> None:
    data = bomb(LIMIT)
    assert len(data) < 64 << 10
    results: list[object] = []
    lock = threading.Lock()
    with Receiver(tmp_path / "dump.json", grpc_port=0, http_port=0, max_message_bytes=LIMIT) as rcv:
        go = threading.Barrier(BOMBS)

        def over_http() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", rcv.http_port, timeout=60)
            go.wait()
            conn.request(
                "POST",
                "/v1/traces",
                body=data,
                headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
            )
            status = conn.getresponse().status
            conn.close()
            with lock:
                results.append(status)

        def over_grpc() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{rcv.grpc_port}") as ch:
                go.wait()
                try:
                    ch.unary_unary(EXPORT)(data, timeout=60)
                    outcome: object = "OK"
                except grpc.RpcError as exc:
                    outcome = exc.code()
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=over_http if i % 2 else over_grpc) for i in range(BOMBS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert Counter(results) == {413: BOMBS // 2, grpc.StatusCode.RESOURCE_EXHAUSTED: BOMBS // 2}
        # Each inflated past the limit to be refused, a step at a time: never more than a few
        # steps held per slot, whatever the number of bombs.
        assert 0 < rcv.inflate.peak <= DEFAULT_SLOTS * (KEEP_BYTES + (2 << 20))
        assert rcv.inflate.held == 0
        assert_alive(rcv)


def big_value_request(seed: int, value_bytes: int) -> bytes:
    req, _ = make_request(seed, n=1)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="payload", value=AnyValue(string_value=f"{seed:08d}" + "x" * value_bytes))
    return req.SerializeToString()


def test_converter_caches_are_bounded_by_bytes() -> None:
    tc = Transcoder()
    # Distinct 2 MiB values: never worth caching.
    for seed in range(8):
        tc.transcode(big_value_request(seed, 2 << 20))
    assert tc.cached_bytes() < 1 << 20
    # Distinct 30 kB values, 64 MiB of them in all: cached, but never more than the bound.
    for seed in range(100, 100 + (64 << 20) // 30_000):
        tc.transcode(big_value_request(seed, 30_000))
        assert tc.cached_bytes() <= 5 * CACHE_BYTES
    assert sum(len(k) + len(v) for cache in tc.caches() for k, v in cache.items()) <= 5 * CACHE_BYTES


def test_transcoding_is_the_same_with_or_without_the_cache() -> None:
    warm, cold = Transcoder(), Transcoder(cache_bytes=0)
    for seed in range(20):
        body = big_value_request(seed % 4, 30_000 if seed % 2 else 100)
        assert warm.transcode(body).line == cold.transcode(body).line
