"""Stopping is bounded: a client that stalls or trickles its request cannot hold the receiver past
its grace, what was cut is said (log and receipts), and every acknowledged span is kept.
Real receiver, real sockets."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

from ctxdoctor.readers import read_paths
from ctxdoctor.receiver import Receiver, read_receipts
from tests.helpers import Listen, http_call, make_request

HEAD = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n"


def stalled(port: int, sent: bytes) -> socket.socket:
    """A client that sent ``sent`` and then nothing more."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(sent)
    return s


def trickle(port: int, stop: threading.Event) -> threading.Thread:
    """A client that sends its body a byte every 0.2 s, for ever."""

    def run() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(HEAD)
            while not stop.is_set():
                try:
                    s.sendall(b"\x0a")
                except OSError:
                    return
                stop.wait(0.2)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_slow_clients_are_cut_after_the_grace(tmp_path: Path) -> None:
    logs: list[str] = []
    rcv = Receiver(tmp_path / "dump.json", grpc_port=0, http_port=0, grace=1.0, log=logs.append).start()
    assert rcv.http_port is not None
    req, good = make_request(1)
    assert http_call(rcv, req.SerializeToString())[0] == 200
    stop_trickling = threading.Event()
    clients = [
        stalled(rcv.http_port, HEAD[:40]),  # part of the headers
        stalled(rcv.http_port, HEAD + b"\x0a\x00"),  # the headers and 2 of 1000 body bytes
    ]
    trickler = trickle(rcv.http_port, stop_trickling)
    time.sleep(0.5)  # all three are being served
    stopper = threading.Thread(target=rcv.stop)
    started = time.monotonic()
    stopper.start()
    try:
        stopper.join(1.0 + 4.0)
        took = time.monotonic() - started
        hung = stopper.is_alive()
    finally:  # a receiver that waits for these clients is released, so that a failure never hangs
        stop_trickling.set()
        for c in clients:
            c.close()
        trickler.join(5)
        stopper.join(60)
    assert not hung, f"stopping still waited for slow clients after {took:.1f}s with a 1 s grace"
    cut_lines = [m for m in logs if "cut" in m]
    assert len(cut_lines) == 1 and "3 request(s) still arriving" in cut_lines[0], logs
    receipts = read_receipts(rcv.receipts_path)  # type: ignore[arg-type]
    cut = [r for r in receipts if r.status.startswith("cut:")]
    assert len(cut) == 3 and all(r.spans == 0 for r in cut)
    assert {(s.trace_id, s.span_id) for s in read_paths([rcv.output]).spans} == good


def test_sigterm_stops_listen_within_its_grace(tmp_path: Path) -> None:
    listen = Listen(tmp_path / "dump.json")
    stop_trickling = threading.Event()
    trickler = trickle(listen.http_port, stop_trickling)
    time.sleep(0.5)
    started = time.monotonic()
    try:
        rc, _, err = listen.stop(signal.SIGTERM, timeout=40)
    finally:
        stop_trickling.set()
        trickler.join(5)
    took = time.monotonic() - started
    assert rc == 0, err
    assert took < 10 + 10, f"stopping took {took:.1f}s with the 10 s grace"
    assert "stopped after a 10 s grace with 1 request(s) still arriving" in err, err
