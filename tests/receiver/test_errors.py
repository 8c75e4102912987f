"""Protocol conformance and bad input (OTLP specification, "Failures"), against the in-process
``Receiver`` with real gRPC and HTTP clients: every error has the specified status and body, and
none of them disturbs the requests before and after it."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from ctxdoctor.readers import read_paths
from ctxdoctor.receiver import PortInUse, Receiver, read_receipts
from ctxdoctor.receiver.sink import drop_partial_line
from tests.helpers import LIMIT, assert_alive, dump_ids, grpc_call, http_call, make_request, rpc_status

# -- malformed -----------------------------------------------------------------------------------


def test_grpc_malformed_protobuf_is_invalid_argument(rcv: Receiver) -> None:
    assert_alive(rcv)
    with pytest.raises(grpc.RpcError) as ei:
        grpc_call(rcv, b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf" in ei.value.details()
    assert_alive(rcv)
    assert rcv.stats.failed_requests == 1


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/x-protobuf", b"\x0a\xff\xff\xff\xff\x0f garbage"),
        ("application/json", b'{"resourceSpans": [ {'),
        ("application/json", b'{"resourceSpans": 7}'),
        ("application/json", b"[1, 2]"),
    ],
)
def test_http_malformed_is_400_with_status_in_the_request_encoding(rcv: Receiver, ctype: str, body: bytes) -> None:
    assert_alive(rcv)
    status, headers, data = http_call(rcv, body, ctype)
    assert status == 400
    assert headers["content-type"] == ctype
    code, message = rpc_status(headers, data)
    assert code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert message
    assert_alive(rcv)


def test_http_bad_gzip_is_400(rcv: Receiver) -> None:
    status, headers, data = http_call(rcv, b"\x1f\x8b not gzip", headers={"Content-Encoding": "gzip"})
    assert status == 400
    assert "gzip" in rpc_status(headers, data)[1]
    assert_alive(rcv)


# -- invalid ids: partial success ----------------------------------------------------------------


def test_grpc_invalid_ids_partial_success(rcv: Receiver) -> None:
    req, good = make_request(1, n=4, bad=2)
    resp = grpc_call(rcv, req.SerializeToString())
    assert resp.partial_success.rejected_spans == 2
    assert "traceId" in resp.partial_success.error_message
    assert set(dump_ids(rcv)) == good
    assert_alive(rcv)


def test_http_protobuf_invalid_ids_partial_success(rcv: Receiver) -> None:
    req, good = make_request(2, n=4, bad=3)
    status, headers, data = http_call(rcv, req.SerializeToString())
    assert status == 200 and headers["content-type"] == "application/x-protobuf"
    resp = ExportTraceServiceResponse.FromString(data)
    assert resp.partial_success.rejected_spans == 3
    assert set(dump_ids(rcv)) == good
    receipts = read_receipts(rcv.output.with_name("dump.json.receipts.jsonl"))
    assert [(r.spans, r.rejected, r.status) for r in receipts] == [(4, 3, "partial")]


def test_http_json_invalid_ids_partial_success(rcv: Receiver) -> None:
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": "ok",
                            },
                            # base64, the classic mistake: rejected with a hint
                            {"traceId": "CvdlGRbNQ92ESOshHIAxnA==", "spanId": "t61rcWkgMzE=", "name": "b64"},
                            # hex, but too short
                            {"traceId": "0af765", "spanId": "b7ad6b7169203332", "name": "short"},
                        ]
                    }
                ]
            }
        ]
    }
    status, headers, data = http_call(rcv, json.dumps(doc).encode(), "application/json")
    assert status == 200 and headers["content-type"] == "application/json"
    body = json.loads(data)
    assert body["partialSuccess"]["rejectedSpans"] == "2"
    assert "hex, not base64" in body["partialSuccess"]["errorMessage"]
    assert dump_ids(rcv) == [(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)]


# -- size limits -----------------------------------------------------------------------------------


def test_grpc_over_the_limit_is_resource_exhausted(rcv: Receiver) -> None:
    big, _ = make_request(3, n=2, pad=LIMIT // 2 + 10)
    data = big.SerializeToString()
    assert len(data) > LIMIT
    with pytest.raises(grpc.RpcError) as ei:
        grpc_call(rcv, data)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Compressed it is tiny on the wire, but the limit applies after decompression.
    with pytest.raises(grpc.RpcError) as ei:
        grpc_call(rcv, data, compression=grpc.Compression.Gzip)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit" in ei.value.details()
    # Just under the limit, compressed: accepted.
    ok, good = make_request(4, n=2, pad=LIMIT // 2 - 4096)
    grpc_call(rcv, ok.SerializeToString(), compression=grpc.Compression.Gzip)
    assert good <= set(dump_ids(rcv))
    assert_alive(rcv)


def test_http_over_the_limit_is_413(rcv: Receiver) -> None:
    big, _ = make_request(5, n=2, pad=LIMIT // 2 + 10)
    data = big.SerializeToString()
    # Content-Length over the limit: answered without reading it all, and the client sees 413.
    status, headers, body = http_call(rcv, data)
    assert status == 413
    assert rpc_status(headers, body)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    # Chunked, no Content-Length.
    status, _, _ = http_call(rcv, [data[i : i + 65536] for i in range(0, len(data), 65536)])
    assert status == 413
    # A gzip body that is small on the wire but over the limit once decompressed.
    status, headers, body = http_call(rcv, gzip.compress(data), headers={"Content-Encoding": "gzip"})
    assert status == 413
    assert "decompresses" in rpc_status(headers, body)[1]
    assert_alive(rcv)
    assert rcv.stats.failed_requests == 3


# -- wrong content type, path, method ------------------------------------------------------------


def test_wrong_content_type_is_415(rcv: Receiver) -> None:
    req, _ = make_request(6)
    status, headers, body = http_call(rcv, req.SerializeToString(), "text/plain")
    assert status == 415
    assert "application/x-protobuf" in rpc_status(headers, body)[1]
    status, _, _ = http_call(rcv, req.SerializeToString(), None)
    assert status == 415
    status, _, _ = http_call(rcv, req.SerializeToString(), headers={"Content-Encoding": "br"})
    assert status == 415
    assert_alive(rcv)


def test_wrong_path_is_404_and_wrong_method_405(rcv: Receiver) -> None:
    req, _ = make_request(7)
    status, _, _ = http_call(rcv, req.SerializeToString(), path="/v1/metrics")
    assert status == 404
    status, _, _ = http_call(rcv, b"", method="GET", path="/")
    assert status == 404
    for method in ("GET", "PUT", "DELETE"):
        status, headers, _ = http_call(rcv, b"", method=method)
        assert status == 405
        assert headers["allow"] == "POST"
    assert_alive(rcv)


def test_grpc_unknown_method_is_unimplemented(rcv: Receiver) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{rcv.grpc_port}") as ch, pytest.raises(grpc.RpcError) as ei:
        ch.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")(b"", timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert_alive(rcv)


# -- bodies the exporters really send --------------------------------------------------------------


def test_chunked_keepalive_and_gzip_bodies(rcv: Receiver) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", rcv.http_port, timeout=10)
    expected: set[tuple[int, int]] = set()
    for seed in range(10, 14):
        req, good = make_request(seed, n=50)
        data = req.SerializeToString()
        if seed % 2:
            data = gzip.compress(data)
            headers = {"Content-Encoding": "gzip"}
        else:
            headers = {}
        chunks = [data[i : i + 100] for i in range(0, len(data), 100)]
        status, _, body = http_call(rcv, chunks, headers=headers, conn=conn)
        assert status == 200
        assert ExportTraceServiceResponse.FromString(body) == ExportTraceServiceResponse()
        expected |= good
    conn.close()
    assert set(dump_ids(rcv)) == expected
    # One keep-alive connection carried all four requests.
    assert rcv.stats.connections_per_service() == {"errors-test": 1}


def test_empty_request_is_accepted(rcv: Receiver) -> None:
    status, _, _ = http_call(rcv, b"")
    assert status == 200
    assert grpc_call(rcv, b"") == ExportTraceServiceResponse()
    assert dump_ids(rcv) == []


def test_otlp_json_as_the_specification_writes_it(rcv: Receiver) -> None:
    # The shape of opentelemetry-proto's examples/trace.json: pretty-printed, upper-case hex ids,
    # int64 times as JSON numbers, the kind as an integer.
    body = b"""{
  "resourceSpans": [
    {
      "resource": {
        "attributes": [{"key": "service.name", "value": {"stringValue": "spec.example"}}]
      },
      "scopeSpans": [
        {
          "scope": {"name": "example.lib", "version": "2.0.0"},
          "spans": [
            {
              "traceId": "4BF92F3577B34DA6A3CE929D0E0E4736",
              "spanId": "00F067AA0BA902B7",
              "parentSpanId": "00F067AA0BA902B6",
              "name": "server span",
              "startTimeUnixNano": 1544712660000000000,
              "endTimeUnixNano": 1544712661000000000,
              "kind": 2,
              "attributes": [{"key": "http.route", "value": {"stringValue": "/items"}}]
            }
          ]
        }
      ]
    }
  ]
}"""
    status, _, data = http_call(rcv, body, "application/json; charset=utf-8")
    assert status == 200
    assert json.loads(data) == {}
    assert rcv.flush()
    line = rcv.output.read_text().strip()
    span = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    # Written strictly: lower-case hex, int64 as strings, integer enum.
    assert span["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span["parentSpanId"] == "00f067aa0ba902b6"
    assert span["startTimeUnixNano"] == "1544712660000000000"
    assert span["kind"] == 2
    (s,) = read_paths([rcv.output]).spans
    assert (s.name, s.kind, s.end - s.start) == ("server span", 2, 1_000_000_000)


# -- the dump cannot be written ------------------------------------------------------------------


def test_unwritable_journal_is_unavailable_and_503(tmp_path: Path) -> None:
    errors: list[str] = []
    # /dev/full: every write fails with ENOSPC, as on a full disk.
    with Receiver(tmp_path / "dump.json", grpc_port=0, http_port=0, journal=Path("/dev/full")) as rcv:
        rcv.on_write_error(errors.append)
        req, _ = make_request(20)
        with pytest.raises(grpc.RpcError) as ei:
            grpc_call(rcv, req.SerializeToString())
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "disk full" in ei.value.details()
        status, headers, body = http_call(rcv, req.SerializeToString())
        assert status == 503
        assert headers["retry-after"] == "1"
        assert rpc_status(headers, body)[0] == grpc.StatusCode.UNAVAILABLE.value[0]
        assert rcv.stats.write_errors == 2 and rcv.stats.spans == 0
        assert errors and "disk full" in errors[0]


# -- ports -----------------------------------------------------------------------------------------


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(PortInUse, match=r"OTLP/gRPC on 127\.0\.0\.1:\d+: the port is already in use"):
            Receiver(tmp_path / "a.json", grpc_port=busy, http_port=0).start()
        with pytest.raises(PortInUse, match=r"OTLP/HTTP on 127\.0\.0\.1:\d+: the port is already in use"):
            Receiver(tmp_path / "b.json", grpc_port=0, http_port=busy).start()
    # Two receivers cannot share a gRPC port either (grpc's SO_REUSEPORT is off).
    with Receiver(tmp_path / "c.json", grpc_port=0, http_port=None) as first:
        assert first.grpc_port is not None
        with pytest.raises(PortInUse):
            Receiver(tmp_path / "d.json", grpc_port=first.grpc_port, http_port=None).start()


def test_grpc_client_on_the_http_port_is_told_where_to_go(rcv: Receiver) -> None:
    req, _ = make_request(30)
    with pytest.raises(grpc.RpcError) as ei:
        grpc_call(rcv, req.SerializeToString(), port=rcv.http_port)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"OTLP/HTTP port; for OTLP/gRPC use port {rcv.grpc_port}" in ei.value.details()
    logs = rcv.logs  # type: ignore[attr-defined]
    assert len(logs) == 1, logs
    assert "gRPC client" in logs[0] and f"OTLP/gRPC is on port {rcv.grpc_port}" in logs[0]
    assert_alive(rcv)


def test_http_client_on_the_grpc_port_does_not_disturb_it(rcv: Receiver) -> None:
    req, _ = make_request(31)
    c = http.client.HTTPConnection("127.0.0.1", rcv.grpc_port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        c.request(
            "POST",
            "/v1/traces",
            body=req.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        c.getresponse()
    c.close()
    assert_alive(rcv)


def test_a_bug_is_one_line_and_unavailable_never_a_traceback(
    rcv: Receiver, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("Authorization: Bearer s3cr3t")  # as if a message quoted an attribute

    monkeypatch.setattr(rcv._core, "accept", broken)
    req, _ = make_request(40)
    with pytest.raises(grpc.RpcError) as ei:
        grpc_call(rcv, req.SerializeToString())
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "RuntimeError" in ei.value.details() and "s3cr3t" not in ei.value.details()
    status, _headers, body = http_call(rcv, req.SerializeToString())
    assert status == 503
    assert "s3cr3t" not in body.decode()
    logs = rcv.logs  # type: ignore[attr-defined]
    assert logs == ["OTLP/gRPC: internal error (RuntimeError)", "OTLP/HTTP: internal error (RuntimeError)"]
    out, err = capfd.readouterr()
    assert "s3cr3t" not in out + err and "Traceback" not in out + err
    monkeypatch.undo()
    assert_alive(rcv)


def test_receipts_do_not_keep_quoted_values_of_bad_requests(rcv: Receiver) -> None:
    doc = b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0af7651916cd43dd8448eb211c80319c",'
    doc += b' "spanId": "b7ad6b7169203331", "startTimeUnixNano": "token-s3cr3t"}]}]}]}'
    status, _headers, _body = http_call(rcv, doc, "application/json")
    assert status == 400
    receipts = read_receipts(rcv.output.with_name("dump.json.receipts.jsonl"))
    assert len(receipts) == 1 and receipts[0].status.startswith("invalid")
    assert "s3cr3t" not in receipts[0].status


def test_a_second_receiver_on_the_same_output_is_refused(rcv: Receiver) -> None:
    from ctxdoctor.receiver import DumpWriteError

    with pytest.raises(DumpWriteError, match="being written by another ctxdoctor"):
        Receiver(rcv.output, grpc_port=0, http_port=0).start()
    assert_alive(rcv)  # and the first one's dump was not truncated under it
    assert len(dump_ids(rcv)) == 6


@pytest.mark.parametrize(
    ("content", "kept"),
    [
        (b"", b""),
        (b'{"a":1}\n{"b":2}\n', b'{"a":1}\n{"b":2}\n'),
        (b'{"a":1}\n{"b":', b'{"a":1}\n'),
        (b'{"a":', b""),
        (b'{"a":1}\n' + b"x" * (3 << 20), b'{"a":1}\n'),  # the partial line spans several blocks
    ],
)
def test_drop_partial_line(tmp_path: Path, content: bytes, kept: bytes) -> None:
    path = tmp_path / "dump.json"
    path.write_bytes(content)
    assert drop_partial_line(path) == len(content) - len(kept)
    assert path.read_bytes() == kept
    assert drop_partial_line(tmp_path / "missing.json") == 0


def test_a_converter_killed_mid_line_leaves_whole_lines(tmp_path: Path) -> None:
    """The receiver kills a converter that cannot write; killed between a short write and its
    rollback, it would leave a torn last line. The receiver cuts it, and reports from the journal."""
    with Receiver(tmp_path / "dump.json", grpc_port=0, http_port=0) as rcv:
        req, first = make_request(1, n=5)
        grpc_call(rcv, req.SerializeToString())
        assert rcv.flush()
        whole = rcv.output.read_bytes()
        assert whole.endswith(b"\n")
        with rcv.output.open("ab") as f:
            f.write(b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"00')  # as a short write leaves it
        assert rcv._converter is not None
        rcv._converter.kill()
        rcv._converter.wait()
        req, second = make_request(2, n=5)
        grpc_call(rcv, req.SerializeToString())  # acknowledged: in the journal
    assert not rcv.dump_complete and rcv.result_path == rcv.journal_path
    assert rcv.output.read_bytes() == whole
    assert {(s.trace_id, s.span_id) for s in read_paths([rcv.journal_path]).spans} == first | second
