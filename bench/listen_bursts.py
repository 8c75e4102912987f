"""Bursts that once broke ``ctxdoctor listen``, measured (run through ``bench/listen.py --bursts``).

    .venv/bin/python bench/listen.py --bursts-only        # the three bursts, about a minute

Each burst runs against a fresh ``ctxdoctor listen`` (JSON dump) on free 127.0.0.1 ports, and its
peak memory is that of the receiver's whole process tree (the receiver and its converter),
sampled every 0.1 s, against the same tree idle just before the burst (the baseline, measured in
the same run):

- ``connections``: 200 HTTP connections open at once, each then sends one 20-span request: how
  many were answered 200, reset or timed out, and the latency percentiles.
- ``gzip-bombs``: 16 requests at once (8 gRPC, 8 HTTP), each a few kB of gzip that inflates to
  more than the 64 MiB limit: every one must be refused (413 / RESOURCE_EXHAUSTED).
- ``big-values``: 16 requests at once (HTTP, gzip), each with one distinct 20 MiB attribute value
  (small on the wire): accepted, and the memory they leave behind once converted.
"""

from __future__ import annotations

import http.client
import re
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TARGET_PEAK_BYTES = 300 * 1000 * 1000  # the receiver tree's peak, below
_READY = re.compile(r"OTLP/gRPC on [^ ]+:(\d+), OTLP/HTTP on [^ ]+:(\d+)")


def _request(seed: int, spans: int, value_bytes: int = 0) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="burst"))
    out = rs.scope_spans.add().spans
    t0 = 1_700_000_000_000_000_000 + seed * 1_000_000
    for i in range(spans):
        s = out.add(
            trace_id=(seed + 1).to_bytes(16, "big"),
            span_id=((seed << 16) + i + 1).to_bytes(8, "big"),
            parent_span_id=((seed << 16) + 1).to_bytes(8, "big") if i else b"",
            name=f"op{i}",
            start_time_unix_nano=t0 + i,
            end_time_unix_nano=t0 + 1000 + i,
        )
        if value_bytes:
            s.attributes.add(key="payload", value=AnyValue(string_value=f"{seed:08d}" + "v" * value_bytes))
    return req.SerializeToString()


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _bomb(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(b"\0" * size) + c.flush()


def _post(port: int, body: bytes, gzip: bool, timeout: float) -> tuple[str, float]:
    headers = {"Content-Type": "application/x-protobuf"}
    if gzip:
        headers["Content-Encoding"] = "gzip"
    t0 = time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return str(resp.status), time.monotonic() - t0
    except TimeoutError:
        return "timeout", time.monotonic() - t0
    except ConnectionResetError:
        return "reset", time.monotonic() - t0
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__, time.monotonic() - t0


def _grpc(port: int, body: bytes, timeout: float) -> tuple[str, float]:
    import grpc

    t0 = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            ch.unary_unary(EXPORT)(body, timeout=timeout)
            return "OK", time.monotonic() - t0
        except grpc.RpcError as exc:
            return exc.code().name, time.monotonic() - t0


def _at_once(calls: list[Any]) -> list[tuple[str, float]]:
    results: list[tuple[str, float]] = [("not run", 0.0)] * len(calls)
    go = threading.Barrier(len(calls))

    def run(i: int) -> None:
        go.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


def _connections(grpc_port: int, http_port: int) -> list[tuple[str, float]]:
    bodies = [_request(seed, 20) for seed in range(200)]
    return _at_once([lambda b=b: _post(http_port, b, False, 10.0) for b in bodies])


def _bombs(grpc_port: int, http_port: int) -> list[tuple[str, float]]:
    data = _bomb((64 << 20) + (1 << 20))
    calls = [(lambda: _grpc(grpc_port, data, 60.0)) if i % 2 else (lambda: _post(http_port, data, True, 60.0))
             for i in range(16)]
    return _at_once(calls)


def _big_values(grpc_port: int, http_port: int) -> list[tuple[str, float]]:
    bodies = [_gzip(_request(1000 + seed, 1, 20 << 20)) for seed in range(16)]
    return _at_once([lambda b=b: _post(http_port, b, True, 120.0) for b in bodies])


BURSTS = {"connections": _connections, "gzip-bombs": _bombs, "big-values": _big_values}


def run_burst(name: str, work: Path, server_cls: Any) -> dict[str, Any]:
    """One burst against a fresh ``ctxdoctor listen``; ``server_cls`` is ``bench.listen.Server``."""
    dump = work / f"burst-{name}.json"
    cmd = [sys.executable, "-m", "ctxdoctor", "listen", "--port", "0", "--http-port", "0", "--output", str(dump),
           "--force"]
    server = server_cls(cmd, _READY, tty=False)
    res: dict[str, Any] = {"burst": name, "cmd": cmd}
    try:
        grpc_port, http_port = server.wait_ready()
        time.sleep(1.0)  # imports done, converter started: the idle baseline
        res["baseline_bytes"] = server.rss_now()
        t0 = time.monotonic()
        results = BURSTS[name](grpc_port, http_port)
        res["burst_s"] = time.monotonic() - t0
        time.sleep(3.0)  # the converter catches up; what stays is what a long run would keep
        res["after_bytes"] = server.rss_now()
        res["peak_bytes"] = server.peak(until=time.monotonic())  # receiving, before the stop
        outcomes = Counter(r for r, _ in results)
        res["outcomes"] = dict(outcomes)
        lat = sorted(t for _, t in results)
        res["p50_s"] = lat[len(lat) // 2]
        res["p99_s"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        rc, took = server.stop(60)
        res["exit_code"], res["stop_s"] = rc, took
        res["peak_incl_stop_bytes"] = server.peak()
        res["peak_main_bytes"], res["peak_helpers_bytes"] = server.main_peak, server.helpers_peak
    finally:
        server.kill()
        for p in dump.parent.glob(dump.name + "*"):
            p.unlink()
    return res


def report(runs: list[dict[str, Any]]) -> None:
    print("\nbursts (ctxdoctor listen, JSON dump; memory of the receiver's whole process tree)")
    hdr = (f"{'burst':<12} {'baseline MB':>11} {'peak MB':>8} {'(main':>6} {'helpers)':>8} {'recv MB':>7} "
           f"{'after MB':>8} "
           f"{'p50 s':>6} {'p99 s':>6} {'stop s':>6}  outcomes")
    print(hdr)
    print("-" * len(hdr))
    for r in runs:
        if "error" in r:
            print(f"{r['burst']:<12} FAILED: {r['error'][:200]}")
            continue
        print(f"{r['burst']:<12} {r['baseline_bytes'] / 1e6:>11.0f} {r['peak_incl_stop_bytes'] / 1e6:>8.0f} "
              f"{r['peak_main_bytes'] / 1e6:>6.0f} {r['peak_helpers_bytes'] / 1e6:>8.0f} "
              f"{r['peak_bytes'] / 1e6:>7.0f} "
              f"{r['after_bytes'] / 1e6:>8.0f} "
              f"{r['p50_s']:>6.2f} {r['p99_s']:>6.2f} {r['stop_s']:>6.1f}  "
              f"{', '.join(f'{k}: {v}' for k, v in sorted(r['outcomes'].items()))}")
    print("\ntargets (bursts):")
    for r in runs:
        if "error" in r:
            continue
        expected = {"connections": {"200": 200}, "big-values": {"200": 16},
                    "gzip-bombs": {"413": 8, "RESOURCE_EXHAUSTED": 8}}[r["burst"]]
        ok_answers = r["outcomes"] == expected
        ok_peak = r["peak_incl_stop_bytes"] < TARGET_PEAK_BYTES
        r["targets"] = {"answers": ok_answers, "peak": ok_peak}
        print(f"  {r['burst']:<12} every request answered as expected: {'PASS' if ok_answers else 'FAIL'}; "
              f"peak < 300 MB: {'PASS' if ok_peak else 'FAIL'} ({r['peak_incl_stop_bytes'] / 1e6:.0f} MB)")
