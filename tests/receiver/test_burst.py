"""Many exporters at once, and exporters that leave before their answer: every request is answered
or said to be unanswered, and none is written twice. Real receiver, real sockets on 127.0.0.1."""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from collections import Counter
from pathlib import Path

from ctxdoctor.receiver import Receiver, read_receipts
from ctxdoctor.receiver.http_server import HttpServer
from ctxdoctor.receiver.ingest import Ingest
from ctxdoctor.receiver.sink import AppendFile
from tests.helpers import dump_ids, http_call, make_request

CONNECTIONS = 200


def test_200_connections_at_once_are_all_answered(tmp_path: Path) -> None:
    requests = [make_request(seed, n=5) for seed in range(1, CONNECTIONS + 1)]
    expected = set().union(*(ids for _, ids in requests))
    statuses: list[int | str] = []
    lock = threading.Lock()
    with Receiver(tmp_path / "dump.json", grpc_port=None, http_port=0) as rcv:
        conns = [http.client.HTTPConnection("127.0.0.1", rcv.http_port, timeout=60) for _ in range(CONNECTIONS)]
        for c in conns:
            c.connect()  # all 200 connect before any sends: the burst an app's workers make
        go = threading.Barrier(CONNECTIONS)

        def send(conn: http.client.HTTPConnection, body: bytes) -> None:
            go.wait()
            try:
                conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
                resp = conn.getresponse()
                resp.read()
                result: int | str = resp.status
            except (OSError, http.client.HTTPException) as exc:
                result = type(exc).__name__
            with lock:
                statuses.append(result)

        threads = [
            threading.Thread(target=send, args=(c, req.SerializeToString()))
            for c, (req, _) in zip(conns, requests, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for c in conns:
            c.close()
        assert Counter(statuses) == {200: CONNECTIONS}
        ids = dump_ids(rcv)
    assert len(ids) == len(expected) and set(ids) == expected  # each span once
    receipts = read_receipts(rcv.receipts_path)  # type: ignore[arg-type]
    assert Counter(r.status for r in receipts) == {"ok": CONNECTIONS}


def test_the_listen_queue_holds_a_burst_the_server_has_not_accepted_yet(tmp_path: Path) -> None:
    # Bound and listening, not accepting yet: what the kernel queues is all a burst gets until
    # the server catches up (the standard library's queue of 5 dropped the rest of 200).
    journal = AppendFile(tmp_path / "journal", exclusive=True)
    server = HttpServer(Ingest(journal, None), "127.0.0.1", 0, max_message_bytes=1 << 20)
    socks = []
    try:
        for _ in range(CONNECTIONS):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", server.port))
            socks.append(s)
        connected: set[socket.socket] = set()
        deadline = time.monotonic() + 3.0
        while len(connected) < CONNECTIONS and time.monotonic() < deadline:
            _, writable, _ = select.select([], [s for s in socks if s not in connected], [], 0.2)
            connected |= {s for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0}
        assert len(connected) == CONNECTIONS
        server.start()
        req, _ = make_request(1, n=1)
        body = req.SerializeToString()
        head = (
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        for s in socks:
            s.setblocking(True)
            s.settimeout(30)
            s.sendall(head + body)
        answers = Counter(s.makefile("rb").readline().split(b" ")[1] for s in socks)
        assert answers == {b"200": CONNECTIONS}
    finally:
        for s in socks:
            s.close()
        server.stop(5.0)
        journal.close()


def leave_before_the_answer(port: int, body: bytes) -> None:
    """An exporter whose timeout fired: it sent the whole request and closed the connection."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )


def test_a_request_kept_but_unanswered_is_receipted_and_its_retry_not_written_again(tmp_path: Path) -> None:
    req, good = make_request(7, n=4)
    body = req.SerializeToString()
    with Receiver(tmp_path / "dump.json", grpc_port=None, http_port=0) as rcv:
        assert rcv.http_port is not None
        leave_before_the_answer(rcv.http_port, body)
        assert rcv.wait_idle(0.3, timeout=20)
        # The exporter retries the same request on a new connection: acknowledged, kept once.
        assert http_call(rcv, body)[0] == 200
        other, more = make_request(8, n=2)
        assert http_call(rcv, other.SerializeToString())[0] == 200
        ids = dump_ids(rcv)
    assert sorted(ids) == sorted(good | more)
    statuses = [r.status for r in read_receipts(rcv.receipts_path)]  # type: ignore[arg-type]
    assert statuses[0] == "ok"
    assert statuses[1].startswith("unanswered:") and "4 span(s) are kept" in statuses[1]
    assert statuses[2].startswith("duplicate:")
    assert statuses[3] == "ok"
    # Only the retry of an unanswered request is recognised: sending a body twice on purpose
    # (both answered) keeps both.
    with Receiver(tmp_path / "again.json", grpc_port=None, http_port=0) as rcv:
        assert http_call(rcv, body)[0] == 200
        assert http_call(rcv, body)[0] == 200
        assert len(dump_ids(rcv)) == 2 * len(good)
