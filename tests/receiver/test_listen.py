"""``ctxdoctor listen`` as a process: stopping (signals, --duration, --max-spans) without losing
an acknowledged span, many exporters at once, a dump that cannot be written, busy ports."""

from __future__ import annotations

import http.client
import itertools
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from ctxdoctor.readers import read_paths
from tests.helpers import (
    APPS,
    EXPORT,
    Listen,
    app_env,
    check_dump,
    created_ids,
    fill_the_disk,
    make_request,
    needs_node,
)


class Stream:
    """Clients sending a steady stream of requests, remembering which were acknowledged."""

    def __init__(self, listen: Listen, grpc_clients: int = 2, http_clients: int = 2, spans: int = 20) -> None:
        self.listen = listen
        self.spans = spans
        self.acked: set[tuple[int, int]] = set()
        self.sent: set[tuple[int, int]] = set()
        self.ack_count = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._seeds = itertools.count(1)
        self.threads = [threading.Thread(target=self._grpc, daemon=True) for _ in range(grpc_clients)] + [
            threading.Thread(target=self._http, daemon=True) for _ in range(http_clients)
        ]

    def start(self) -> Stream:
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _next(self) -> tuple[bytes, set[tuple[int, int]]]:
        with self.lock:
            seed = next(self._seeds)
        req, ids = make_request(seed, n=self.spans)
        with self.lock:
            self.sent |= ids
        return req.SerializeToString(), ids

    def _ok(self, ids: set[tuple[int, int]]) -> None:
        with self.lock:
            self.acked |= ids
            self.ack_count += 1

    def _grpc(self) -> None:
        failures = 0
        with grpc.insecure_channel(f"127.0.0.1:{self.listen.grpc_port}") as ch:
            call = ch.unary_unary(EXPORT)
            while not self.stop.is_set() and failures < 20:
                data, ids = self._next()
                try:
                    call(data, timeout=5)
                except grpc.RpcError:
                    failures += 1
                    time.sleep(0.01)
                    continue
                self._ok(ids)

    def _http(self) -> None:
        failures = 0
        conn: http.client.HTTPConnection | None = None
        while not self.stop.is_set() and failures < 20:
            data, ids = self._next()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.listen.http_port, timeout=5)
                conn.request("POST", "/v1/traces", body=data, headers={"Content-Type": "application/x-protobuf"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status}")
            except (OSError, http.client.HTTPException):
                failures += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
                continue
            self._ok(ids)
        if conn is not None:
            conn.close()

    def wait_for(self, acks: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.ack_count < acks:
            assert time.monotonic() < deadline, f"only {self.ack_count} requests acknowledged"
            time.sleep(0.02)


@pytest.mark.parametrize("name", ["dump.json", "dump.pb"])  # converted behind, or the journal itself
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_stream_loses_no_acknowledged_span(tmp_path: Path, sig: int, name: str) -> None:
    listen = Listen(tmp_path / name)
    try:
        stream = Stream(listen).start()
        stream.wait_for(60)
        listen.proc.send_signal(sig)  # while all four clients are mid-stream
        rc, out, err = listen.wait(60)
        stream.join()
    finally:
        listen.kill()
    assert rc == 0, err
    assert "Traceback" not in err
    dump = read_paths([listen.dump])
    assert not dump.warnings  # no torn last line
    got = [(s.trace_id, s.span_id) for s in dump.spans]
    assert len(got) == len(set(got)), "a span was written twice"
    lost = stream.acked - set(got)
    assert not lost, f"{len(lost)} acknowledged spans are not in the dump"
    assert set(got) <= stream.sent
    assert f"Stopped ({signal.Signals(sig).name})" in out
    assert f"Received {len(got)} spans" in out
    assert "errors-test" in out  # the per-service connection summary


def test_many_exporters_at_once(tmp_path: Path) -> None:
    """Ten real exporters (Python gRPC, Python HTTP with gzip, Node.js http/protobuf and gRPC)
    export at the same time; every span of every app arrives once."""
    listen = Listen(tmp_path / "dump.json")
    apps = []
    try:
        runs: list[tuple[list[str], str, str]] = []
        for i in range(4):
            runs.append(([sys.executable, str(APPS / "python_exporter.py")], "grpc", f"py-grpc-{i}"))
        for i in range(3):
            runs.append(([sys.executable, str(APPS / "python_exporter.py")], "http/protobuf", f"py-http-{i}"))
        node = needs_node.args[0] is False  # type: ignore[attr-defined]
        if node:
            runs.append((["node", str(APPS / "node" / "workers.js")], "http/protobuf", "node-http"))
            runs.append((["node", str(APPS / "node" / "workers.js")], "grpc", "node-grpc"))
            runs.append((["node", str(APPS / "node" / "workers.js")], "http/json", "node-json"))
        for cmd, protocol, name in runs:
            ids = tmp_path / f"ids-{name}.txt"
            env = app_env(
                ids,
                listen.grpc_endpoint if protocol == "grpc" else listen.http_endpoint,
                protocol,
                CTXDOCTOR_SERVICE=name,
                CTXDOCTOR_ROUNDS="4",
                CTXDOCTOR_TASKS="4",
                CTXDOCTOR_SPANS_PER_TASK="25",
                CTXDOCTOR_WORKERS="2",
            )
            if name.startswith("py-http"):
                env["OTEL_EXPORTER_OTLP_COMPRESSION"] = "gzip"
            apps.append((name, ids, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
        assert len(apps) == (10 if node else 7)  # every app started (Node.js where it is installed)
        for name, _, proc in apps:
            _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"{name}: {stderr.decode()[-2000:]}"
        rc, out, err = listen.stop()
    finally:
        for _, _, proc in apps:
            if proc.poll() is None:
                proc.kill()
        listen.kill()
    assert rc == 0, err
    created = [i for _, ids, _ in apps for i in created_ids(ids)]
    check_dump(listen.dump, created)
    for name, _, _ in apps:
        assert f"  {name}: " in out  # each service in the connections summary


def test_max_spans_and_duration_stop_it(tmp_path: Path) -> None:
    listen = Listen(tmp_path / "dump.json", "--max-spans", "100")
    try:
        stream = Stream(listen, grpc_clients=1, http_clients=1, spans=10).start()
        rc, out, err = listen.wait(60)
        stream.join()
    finally:
        listen.kill()
    assert rc == 0, err
    assert "Stopped (--max-spans 100 reached)" in out
    spans = read_paths([listen.dump]).spans
    assert len(spans) >= 100
    assert stream.acked <= {(s.trace_id, s.span_id) for s in spans}

    t0 = time.monotonic()
    listen = Listen(tmp_path / "dump2.json", "--duration", "1.5")
    rc, out, err = listen.wait(60)
    assert rc == 0, err
    assert time.monotonic() - t0 >= 1.5
    assert "Stopped (--duration 1.5s elapsed)" in out
    assert "No spans arrived" in out
    # The banner tells apps where to send, with the real ports.
    assert f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{listen.http_port}" in out
    assert f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{listen.grpc_port}" in out


def test_plain_progress_lines_when_not_a_tty(tmp_path: Path) -> None:
    listen = Listen(tmp_path / "dump.json")
    try:
        stream = Stream(listen, grpc_clients=1, http_clients=0, spans=5).start()
        stream.wait_for(20)
        time.sleep(5.5)  # one periodic line is due every 5 s while spans keep arriving
        rc, out, err = listen.stop()
        stream.join()
    finally:
        listen.kill()
    assert rc == 0, err
    lines = [x for x in out.splitlines() if x.startswith("[") and "spans" in x]
    assert len(lines) >= 2, out
    last = lines[-1]
    assert "traces" in last and "connections 1" in last and "errors-test (1 conn)" in last
    assert "suspected orphans" in last
    assert "\x1b[" not in out  # no terminal control codes in a log


def test_disk_full_answers_unavailable_and_keeps_what_was_written(tmp_path: Path) -> None:
    """The file size limit stands in for a full disk: writes past it fail with EFBIG. The JSON
    dump (the bigger file) fills first, then the journal: from then on exporters are answered
    UNAVAILABLE / 503. Nothing acknowledged is lost: the journal keeps it, complete, and the
    dump keeps complete lines only."""
    limit = 64 * 1024
    listen, accepted, out, err = fill_the_disk(tmp_path / "dump.json", limit)
    assert "ERROR cannot write" in err and "file size limit reached" in err, err
    journal = tmp_path / "dump.json.journal"
    assert "is incomplete" in err and str(journal) in err, err
    for path in (journal, listen.dump):
        assert path.stat().st_size <= limit
    kept = read_paths([journal])
    assert not kept.warnings  # every record complete: the failed appends were rolled back
    assert {(s.trace_id, s.span_id) for s in kept.spans} == accepted
    dump = read_paths([listen.dump])
    assert not dump.warnings
    assert {(s.trace_id, s.span_id) for s in dump.spans} < accepted
    # The report is about everything acknowledged, read from the journal.
    assert f"wrote {journal}" in out, out
    assert f"Received {len(accepted)} spans in" in out, out


def test_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        for flag in ("--port", "--http-port"):
            other = "--http-port" if flag == "--port" else "--port"
            listen = Listen(tmp_path / "dump.json", ports=(flag, str(busy), other, "0"), wait=False)
            rc, _, err = listen.wait(30)
            assert rc == 2
            assert "Traceback" not in err
            lines = [x for x in err.splitlines() if x.strip()]
            assert len(lines) == 1, err
            assert f"127.0.0.1:{busy}" in lines[0] and "already in use" in lines[0]


def test_unwritable_output_is_one_clear_line(tmp_path: Path) -> None:
    listen = Listen(tmp_path / "no-such-dir" / "dump.json", wait=False)
    rc, _, err = listen.wait(30)
    assert rc == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "cannot open" in lines[0] and "no-such-dir" in lines[0], err
