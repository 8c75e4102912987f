"""Bad input that used to escape as the wrong answer, and error messages that must not repeat what a
client sent (attribute values, header values can be secrets). Real receiver, real clients."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ctxdoctor.receiver import Receiver, read_receipts
from tests.helpers import EXPORT, assert_alive, http_call, rpc_status
from tests.readers.test_bad_files import deep_value_line

SECRET = "SECRET456"


@pytest.fixture
def rcv(tmp_path: Path) -> Iterator[Receiver]:
    logs: list[str] = []
    with Receiver(tmp_path / "dump.json", grpc_port=0, http_port=0, log=logs.append) as r:
        r.logs = logs  # type: ignore[attr-defined]
        yield r


def test_json_nested_too_deep_is_400_invalid_argument(rcv: Receiver) -> None:
    status, headers, body = http_call(rcv, deep_value_line(1000), "application/json")
    assert status == 400
    code, message = rpc_status(headers, body)
    assert code == 3 and "nested too deep" in message
    assert "retry-after" not in headers
    assert rcv.logs == []  # type: ignore[attr-defined]  # bad input, not an internal error
    assert_alive(rcv)


def secret_requests() -> list[tuple[str, bytes, dict[str, str]]]:
    """(what, body, headers): each carries the secret where a careless error message would quote it."""

    def with_value(value: dict[str, object]) -> bytes:
        span = {
            "traceId": "0" * 31 + "1",
            "spanId": "0" * 15 + "1",
            "name": "s",
            "attributes": [{"key": "db.connection", "value": value}],
        }
        return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()

    json_type = {"Content-Type": "application/json"}
    return [
        ("intValue", with_value({"intValue": f"password={SECRET}"}), json_type),
        ("doubleValue", with_value({"doubleValue": f"password={SECRET}"}), json_type),
        ("boolValue", with_value({"boolValue": f"password={SECRET}"}), json_type),
        ("bytesValue", with_value({"bytesValue": f"password={SECRET}"}), json_type),
        (
            "time",
            with_value({"stringValue": "x"}).replace(b'"name"', f'"startTimeUnixNano":"{SECRET}","name"'.encode()),
            json_type,
        ),
        ("traceId", with_value({"stringValue": "x"}).replace(b"0" * 31 + b"1", SECRET.encode() * 3), json_type),
        ("content type", b"x", {"Content-Type": f"password={SECRET}"}),
        ("content encoding", b"x", {"Content-Type": "application/json", "Content-Encoding": SECRET}),
        ("content length", b"", {"Content-Type": "application/json", "Content-Length": SECRET}),
        ("transfer encoding", b"x", {"Content-Type": "application/json", "Transfer-Encoding": SECRET}),
    ]


@pytest.mark.parametrize("what,body,headers", secret_requests(), ids=[w for w, _, _ in secret_requests()])
def test_errors_never_repeat_values(rcv: Receiver, what: str, body: bytes, headers: dict[str, str]) -> None:
    status, resp_headers, resp_body = http_call(rcv, body, None, headers=headers)
    assert status in (200, 400, 415), (what, status, resp_body)
    secret = SECRET.lower()  # header values are compared lowercased: so are the checks
    assert secret.encode() not in resp_body.lower()
    assert secret not in json.dumps(dict(resp_headers)).lower()
    rcv.stop()
    receipts = rcv.receipts_path.read_text()  # type: ignore[union-attr]
    assert receipts, "every request is receipted"
    assert secret not in receipts.lower(), receipts
    assert not any(secret in m.lower() for m in rcv.logs)  # type: ignore[attr-defined]
    # ... while saying what and where.
    status_line = read_receipts(rcv.receipts_path)[-1].status  # type: ignore[arg-type]
    if what.endswith("Value"):
        assert f"attributes[0].value.{what}" in status_line or "attributes.value" in status_line, status_line


def test_grpc_gzip_errors_name_no_content(rcv: Receiver) -> None:
    bad = gzip.compress(b"\x0a\x05" + SECRET.encode())[:-6]  # truncated gzip
    with grpc.insecure_channel(f"127.0.0.1:{rcv.grpc_port}") as ch, pytest.raises(grpc.RpcError) as exc:
        ch.unary_unary(EXPORT)(bad, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert SECRET not in (exc.value.details() or "")
