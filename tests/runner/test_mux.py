"""The one port ``ctxdoctor run`` hands out, in front of the real receiver: gRPC and HTTP clients
both reach their transport unchanged, however the first bytes arrive."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from ctxdoctor.receiver import Receiver
from ctxdoctor.runner.mux import PortMux


@pytest.fixture
def mux(tmp_path: Path) -> Iterator[tuple[PortMux, Receiver]]:
    with Receiver(output=tmp_path / "dump.json", host="127.0.0.1", grpc_port=0, http_port=0, receipts=False) as rcv:
        assert rcv.grpc_port is not None and rcv.http_port is not None
        m = PortMux("127.0.0.1", rcv.grpc_port, rcv.http_port).start()
        try:
            yield m, rcv
        finally:
            m.close()


def _request(n: int = 1) -> trace_service_pb2.ExportTraceServiceRequest:
    spans = [
        trace_pb2.Span(
            trace_id=bytes([1]) * 16,
            span_id=bytes([i + 1]) * 8,
            name=f"s{i}",
            start_time_unix_nano=1,
            end_time_unix_nano=2,
        )
        for i in range(n)
    ]
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=spans)])]
    )


def _http(port: int, body: bytes, content_type: str = "application/x-protobuf") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_http_and_grpc_clients_share_the_port(mux: tuple[PortMux, Receiver]) -> None:
    m, rcv = mux
    answer = _http(m.port, _request(2).SerializeToString())
    assert answer.startswith(b"HTTP/1.1 200")
    with grpc.insecure_channel(f"127.0.0.1:{m.port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        stub.Export(_request(3), timeout=10)
    assert rcv.wait_idle(0.1, timeout=5)
    assert rcv.stats.spans == 5
    assert m.routed == {"grpc": 1, "http": 1}


def test_receiver_errors_come_through_unchanged(mux: tuple[PortMux, Receiver]) -> None:
    m, _ = mux
    assert _http(m.port, b"{}", content_type="text/plain").startswith(b"HTTP/1.1 415")


def test_a_preface_split_across_packets_still_goes_to_grpc(mux: tuple[PortMux, Receiver]) -> None:
    m, _ = mux
    with socket.create_connection(("127.0.0.1", m.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"P")
        time.sleep(0.05)
        s.sendall(b"RI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # + empty SETTINGS
        head = s.recv(9)
    assert len(head) == 9 and head[3] == 0x4  # the server's first frame: HTTP/2 SETTINGS
    assert m.routed["grpc"] == 1


def test_after_close_the_port_refuses(tmp_path: Path) -> None:
    with Receiver(output=tmp_path / "d.json", host="127.0.0.1", grpc_port=0, http_port=0, receipts=False) as rcv:
        assert rcv.grpc_port is not None and rcv.http_port is not None
        m = PortMux("127.0.0.1", rcv.grpc_port, rcv.http_port).start()
        port = m.port
        m.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_tls_client_is_refused_with_one_explanation(tmp_path: Path) -> None:
    said: list[str] = []
    with Receiver(output=tmp_path / "d.json", host="127.0.0.1", grpc_port=0, http_port=0, receipts=False) as rcv:
        assert rcv.grpc_port is not None and rcv.http_port is not None
        m = PortMux("127.0.0.1", rcv.grpc_port, rcv.http_port, log=said.append).start()
        try:
            for _ in range(2):
                with socket.create_connection(("127.0.0.1", m.port), timeout=10) as s:
                    s.sendall(b"\x16\x03\x01\x00\x05hello")  # the start of a TLS ClientHello
                    try:
                        answer = s.recv(100)
                    except ConnectionResetError:  # closed with the hello unread: a reset
                        answer = b""
                    assert answer == b""  # no answer, only the close
        finally:
            m.close()
    assert len(said) == 1 and "TLS" in said[0]
    assert m.routed == {"grpc": 0, "http": 0}
