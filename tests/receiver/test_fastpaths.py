"""The receiver's shortcuts on the request path give exactly what the long way gives.

- ``screen_request(req, raw)`` recognises resources seen before by their wire bytes; the result
  must equal ``screen_request(req)``, which walks and re-serialises every resource, for any input
  upb accepts (irregular layouts fall back to the walk).
- The HTTP handler builds simple header blocks itself; the message must equal what
  ``http.client.parse_headers`` (the ``email`` parser) builds, with the same errors.
"""

from __future__ import annotations

import http.client
import io
from types import SimpleNamespace

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from ctxdoctor.receiver import encode
from ctxdoctor.receiver.encode import screen_request
from ctxdoctor.receiver.http_server import _Handler
from tests.helpers import varint


def _resource(service: str | None, **extra: str) -> Resource:
    attrs = [] if service is None else [KeyValue(key="service.name", value=AnyValue(string_value=service))]
    attrs += [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in extra.items()]
    return Resource(attributes=attrs)


def _rs(resource: Resource | None, n_spans: int = 2, bad: bool = False) -> bytes:
    rs = ResourceSpans()
    if resource is not None:
        rs.resource.CopyFrom(resource)
    spans = rs.scope_spans.add().spans
    for i in range(n_spans):
        spans.add(trace_id=b"\x01" * 16, span_id=bytes([0, 0, 0, 0, 0, 0, 1, i + 1]), name=f"s{i}")
    if bad:
        spans.add(trace_id=bytes(16), span_id=b"\x02" * 8, name="zero")
    return rs.SerializeToString()


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) with a one-byte tag."""
    return bytes([number << 3 | 2]) + varint(len(payload)) + payload


_A = _resource("a", host="h1")
_B = _resource("b", host="h2")

BODIES = {
    "plain": _field(1, _rs(_A)) + _field(1, _rs(_B)) + _field(1, _rs(_A)),
    "no resource": _field(1, _rs(None)) + _field(1, _rs(_A)),
    "empty resource": _field(1, _rs(Resource())),
    "no service.name": _field(1, _rs(_resource(None, host="h3"))),
    "bad spans": _field(1, _rs(_A, bad=True)) + _field(1, _rs(_B)),
    "long resource (2-byte lengths)": _field(1, _rs(_resource("c", big="x" * 300), n_spans=20)),
    # upb merges a resource given twice; the wire walk must not key on either copy alone.
    "resource given twice": _field(1, _field(1, _A.SerializeToString()) + _rs(_B)),
    "same bytes, other resource after": _field(1, _field(1, _A.SerializeToString()) + _rs(None)) + _field(1, _rs(_A)),
    # Fields the walk does not know: the request is screened the long way.
    "unknown top-level field": _field(1, _rs(_A)) + _field(9, b"zz"),
    "unknown ResourceSpans field": _field(1, _rs(_A) + _field(7, b"zz")),
    "schema_url": _field(1, _rs(_A) + _field(3, b"https://x")),
    "empty request": b"",
}


@pytest.mark.parametrize("name", sorted(BODIES))
def test_screening_with_wire_bytes_equals_the_long_way(name: str) -> None:
    body = BODIES[name]
    for _ in range(2):  # the second time, resources come from the cache
        slow = ExportTraceServiceRequest.FromString(body)
        fast = ExportTraceServiceRequest.FromString(body)
        expected = screen_request(slow)
        assert screen_request(fast, body) == expected
        assert fast.SerializeToString() == slow.SerializeToString()  # the same spans removed


def test_the_walk_gives_up_on_irregular_layouts() -> None:
    assert encode._resource_fields(BODIES["plain"]) is not None
    assert encode._resource_fields(BODIES["no resource"]) == [None, _A.SerializeToString()]
    assert encode._resource_fields(BODIES["resource given twice"]) is None
    assert encode._resource_fields(BODIES["unknown top-level field"]) is None
    assert encode._resource_fields(BODIES["unknown ResourceSpans field"]) is None
    assert encode._resource_fields(BODIES["plain"][:-3]) is None  # truncated


def test_the_resource_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encode, "_RESOURCE_IDENTS", {})
    monkeypatch.setattr(encode, "_RESOURCE_IDENTS_MAX", 3)
    for i in range(10):
        body = _field(1, _rs(_resource(f"svc{i}")))
        got = screen_request(ExportTraceServiceRequest.FromString(body), body)
        assert got.services == (f"svc{i}",)
        assert len(encode._RESOURCE_IDENTS) <= 3


HEADER_BLOCKS = [
    b"Host: h\r\nContent-Type: application/x-protobuf\r\nContent-Length: 10\r\n\r\n",
    b"\r\n",
    b"X-Empty:\r\nX-Blanks:  \t a b \t\r\nx-lower: v\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n",
    b"Content-Length: 5\n\n",  # bare LF: the email parser
    b"Host: h\r\n continued\r\n\r\n",  # folded line
    b"Bad Name: v\r\n\r\n",
    b"NoColon\r\n\r\n",
    b": empty name\r\n\r\n",
    b"X-Latin: caf\xe9\r\n\r\n",
    b"X-Nel: a\x85b\r\n\r\n",
    b"X-Vt: a\x0bb\r\n\r\n",
    b"X-Cr: a\rb\r\n\r\n",
    b"From nobody\r\nHost: h\r\n\r\n",
    b"Host: h\r\n",  # the connection ended before the blank line
]


def _fake(data: bytes) -> SimpleNamespace:
    return SimpleNamespace(rfile=io.BufferedReader(io.BytesIO(data)), MessageClass=http.client.HTTPMessage)  # type: ignore[arg-type]


def _state(msg: http.client.HTTPMessage) -> dict[str, object]:
    """A message's attributes, with defects (which do not compare equal) as their class names."""
    state = dict(vars(msg))
    state["defects"] = [type(d).__name__ for d in msg.defects]
    return state


@pytest.mark.parametrize("block", HEADER_BLOCKS)
def test_headers_equal_the_email_parsers(block: bytes) -> None:
    body = b"BODY"
    expected_file = io.BufferedReader(io.BytesIO(block + body))  # type: ignore[arg-type]
    expected = http.client.parse_headers(expected_file)
    fake = _fake(block + body)
    got = _Handler._read_headers(fake)  # type: ignore[arg-type]
    assert _state(got) == _state(expected)
    assert got.items() == expected.items()
    assert fake.rfile.read() == expected_file.read()  # the body is left where it was


@pytest.mark.parametrize(
    ("block", "error"),
    [
        (b"X: " + b"a" * 70000 + b"\r\n\r\n", http.client.LineTooLong),
        (b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n", http.client.HTTPException),
    ],
)
def test_header_limits_are_http_clients(block: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as expected:
        http.client.parse_headers(io.BufferedReader(io.BytesIO(block)))  # type: ignore[arg-type]
    with pytest.raises(error) as got:
        _Handler._read_headers(_fake(block))  # type: ignore[arg-type]
    assert type(got.value) is type(expected.value) and str(got.value) == str(expected.value)
