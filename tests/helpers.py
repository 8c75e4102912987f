"""What the tests share: paths, hand-made OTLP requests (labelled as such: the real dumps live in
fixtures/), the recorded real-SDK scenarios, calls to a running receiver, and ``ctxdoctor listen``
run as a real process on free ports."""

from __future__ import annotations

import collections
import http.client
import importlib.util
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ctxdoctor.analysis import analyze_paths
from ctxdoctor.findings import Report, Settings
from ctxdoctor.model import Span
from ctxdoctor.readers import read_paths
from ctxdoctor.receiver import Receiver
from ctxdoctor.receiver.live import Snapshot
from ctxdoctor.receiver.sink import journal_record

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SCENARIOS = ROOT / "fixtures" / "scenarios"
#: Apps the receiver tests run against ``ctxdoctor listen`` (Python and Node.js SDKs).
APPS = TESTS / "apps"
GOLDEN = TESTS / "golden"
SCHEMAS = TESTS / "schemas"
NODE_APPS = ROOT / "fixtures" / "apps" / "node"
NODE_MODULES = NODE_APPS / "node_modules"
needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_MODULES / "@opentelemetry" / "sdk-node").is_dir(),
    reason="Node.js or fixtures/apps/node/node_modules is missing (run `make node`)",
)


# -- hand-made OTLP/JSON requests -------------------------------------------------------------------

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def span_json(
    trace: int, span: int, name: str, start_ms: float, end_ms: float, parent: int = 0, kind: int = 1, **extra: Any
) -> dict[str, Any]:
    d = {
        "traceId": f"{trace:032x}",
        "spanId": f"{span:016x}",
        "parentSpanId": f"{parent:016x}" if parent else "",
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(T0 + int(start_ms * MS)),
        "endTimeUnixNano": str(T0 + int(end_ms * MS)),
    }
    d.update(extra)
    return d


def request_json(spans: list[dict[str, Any]], service: str = "svc", **resource: Any) -> dict[str, Any]:
    attrs = [{"key": "service.name", "value": {"stringValue": service}}]
    attrs += [{"key": "telemetry.sdk.language", "value": {"stringValue": resource.pop("language", "python")}}]
    for k, v in resource.items():
        key = k.replace("_", ".")
        val = {"intValue": str(v)} if isinstance(v, int) else {"stringValue": str(v)}
        attrs.append({"key": key, "value": val})
    return {
        "resourceSpans": [{"resource": {"attributes": attrs}, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]
    }


def line(req: dict[str, Any]) -> str:
    return json.dumps(req, separators=(",", ":"))


def to_proto(req: dict[str, Any]) -> ExportTraceServiceRequest:
    """Build the protobuf twin of a hand-made OTLP/JSON request (ids converted from hex)."""
    out = ExportTraceServiceRequest()
    for rs in req["resourceSpans"]:
        prs = out.resource_spans.add()
        for kv in rs["resource"]["attributes"]:
            a = prs.resource.attributes.add()
            a.key = kv["key"]
            if "stringValue" in kv["value"]:
                a.value.string_value = kv["value"]["stringValue"]
            else:
                a.value.int_value = int(kv["value"]["intValue"])
        for ss in rs["scopeSpans"]:
            pss = prs.scope_spans.add()
            for s in ss["spans"]:
                ps = pss.spans.add()
                ps.trace_id = bytes.fromhex(s["traceId"])
                ps.span_id = bytes.fromhex(s["spanId"])
                if s["parentSpanId"]:
                    ps.parent_span_id = bytes.fromhex(s["parentSpanId"])
                ps.name = s["name"]
                ps.kind = s["kind"]
                ps.start_time_unix_nano = int(s["startTimeUnixNano"])
                ps.end_time_unix_nano = int(s["endTimeUnixNano"])
                ps.flags = s.get("flags", 0)
                for kv in s.get("attributes", []):
                    a = ps.attributes.add()
                    a.key = kv["key"]
                    if "stringValue" in kv["value"]:
                        a.value.string_value = kv["value"]["stringValue"]
                    else:
                        a.value.int_value = int(kv["value"]["intValue"])
    return out


def varint(n: int, pad: int = 0) -> bytes:
    """``n`` as a varint, with ``pad`` redundant bytes (protobuf parsers accept up to 10 in all)."""
    n &= (1 << 64) - 1  # negative int64s are ten bytes, as protobuf writes them
    out = []
    while True:
        out.append(n & 0x7F)
        n >>= 7
        if not n:
            break
    out = [b | 0x80 for b in out[:-1]] + out[-1:]
    if pad:
        out[-1] |= 0x80
        out += [0x80] * (pad - 1) + [0]
    return bytes(out)


# -- the recorded real-SDK scenarios under fixtures/scenarios/ ------------------------------------


def scenario_names() -> list[str]:
    return sorted(p.parent.name for p in SCENARIOS.glob("*/scenario.json") if (p.parent / "dump.json").exists())


def spec(name: str) -> dict[str, Any]:
    return json.loads((SCENARIOS / name / "scenario.json").read_text())


def truth(name: str) -> list[dict[str, Any]]:
    path = SCENARIOS / name / "truth.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def concurrency(spec: dict[str, Any]) -> int:
    """How many tasks a scenario's app keeps in flight (the knob differs per app)."""
    env = spec.get("env", {})
    for key in ("CTX_CONCURRENCY", "CTX_CALLERS", "CTX_INFLIGHT"):
        if key in env:
            return int(env[key])
    return 1


@cache
def report(name: str, max_orphan_ratio: float | None = None) -> Report:
    return analyze_paths([SCENARIOS / name / "dump.json"], Settings(max_orphan_ratio=max_orphan_ratio))


@cache
def load_recorder() -> ModuleType:
    """``fixtures/record.py``: fixtures/ is not a package, and tests use the one recorder the
    project uses rather than a copy of it."""
    name = "ctxdoctor_fixtures_record"
    spec = importlib.util.spec_from_file_location(name, ROOT / "fixtures" / "record.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


# -- requests to a running receiver ----------------------------------------------------------------

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


LIMIT = 1 << 20


def make_request(
    seed: int, n: int = 3, *, bad: int = 0, pad: int = 0
) -> tuple[ExportTraceServiceRequest, set[tuple[int, int]]]:
    """A request of ``n`` good spans (ids derived from ``seed``) and ``bad`` spans with broken ids."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="errors-test"))
    spans = rs.scope_spans.add().spans
    good = set()
    # One trace per request: a root and its children, each request 10 ms after the previous.
    t0 = 1_700_000_000_000_000_000 + seed * 10_000_000
    tid = (seed << 16) + 1
    for i in range(n):
        sid = (seed << 16) + i + 1
        s = spans.add(
            trace_id=tid.to_bytes(16, "big"),
            span_id=sid.to_bytes(8, "big"),
            parent_span_id=((seed << 16) + 1).to_bytes(8, "big") if i else b"",
            name=f"s{i}",
            start_time_unix_nano=t0 + i * 1000,
            end_time_unix_nano=t0 + 5_000_000 - i * 1000,
        )
        if pad:
            s.attributes.add(key="pad", value=AnyValue(string_value="x" * pad))
        good.add((tid, sid))
    for i in range(bad):
        spans.add(trace_id=b"\x07" * (15 - i % 2), span_id=b"\x01" * 8, name=f"bad{i}")
    return req, good


def grpc_call(
    rcv: Receiver, data: bytes, compression: grpc.Compression | None = None, port: int | None = None
) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(
        f"127.0.0.1:{port or rcv.grpc_port}",
        compression=compression,
        options=[("grpc.max_send_message_length", 64 << 20)],
    ) as ch:
        raw = ch.unary_unary(EXPORT)(data, timeout=10)
    return ExportTraceServiceResponse.FromString(raw)


def http_call(
    rcv: Receiver,
    body: bytes | list[bytes] = b"",
    ctype: str | None = "application/x-protobuf",
    *,
    method: str = "POST",
    path: str = "/v1/traces",
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", rcv.http_port, timeout=20)
    h = dict(headers or {})
    if ctype is not None:
        h["Content-Type"] = ctype
    if isinstance(body, list):  # chunked, no Content-Length (as the Node.js exporter sends)
        c.request(method, path, body=iter(body), headers=h, encode_chunked=True)
    else:
        c.request(method, path, body=body, headers=h)
    resp = c.getresponse()
    data = resp.read()
    out = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    if conn is None:
        c.close()
    return out


def journal_records(seeds: range, n: int = 5, pad: int = 0) -> tuple[bytes, set[tuple[int, int]]]:
    data = b""
    ids: set[tuple[int, int]] = set()
    for seed in seeds:
        req, good = make_request(seed, n=n, pad=pad)
        data += journal_record(req.SerializeToString())
        ids |= good
    return data, ids


def unreadable_record(seed: int) -> bytes:
    """A journal record upb refuses: a span name that is not UTF-8."""
    req, _ = make_request(seed, n=2)
    req.resource_spans[0].scope_spans[0].spans[0].name = "NAME"
    return journal_record(req.SerializeToString().replace(b"NAME", b"N\xffME"))


def snapshot(**kw: object) -> Snapshot:
    base: dict[str, object] = dict(
        spans=1200,
        requests=12,
        traces=40,
        traces_estimated=False,
        services={"api": (3, 3)},
        orphans=7,
        orphans_spans=1200,
        orphans_age=0.5,
        observed_spans=1200,
        backlog_bytes=0,
        rejected=0,
        failed=0,
        write_error=None,
        elapsed=12.0,
    )
    base.update(kw)
    return Snapshot(**base)  # type: ignore[arg-type]


# -- mangled input ---------------------------------------------------------------------------------

SWAPS = [
    (b'"traceId":"', b'"traceId":1'),
    (b'"spanId":"', b'"spanId":["'),
    (b'"kind":', b'"kind":"SPAN_KIND_NOPE",'),
    (b'"startTimeUnixNano":"', b'"startTimeUnixNano":"x'),
    (b'"attributes":[', b'"attributes":{'),
    (b'"resourceSpans":[', b'"resourceSpans":[null,'),
    (b'"spans":[', b'"spans":[{},'),
    (b'"flags":', b'"flags":-'),
    (b'"value":{', b'"value":{"intValue":"nan"},"x":{'),
]


def shuffled(spans: Sequence[Span], orders: int) -> list[list[Span]]:
    """The spans as read, then ``orders - 1`` seeded shuffles of them: parents far from their
    children, in another slice or after them."""
    out = [list(spans)]
    for seed in range(1, orders):
        order = list(spans)
        random.Random(seed).shuffle(order)
        out.append(order)
    return out


def mutate(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    op = rnd.randrange(5)
    if op == 0:  # flip bytes
        for _ in range(rnd.randint(1, 5)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
    elif op == 1:  # cut
        del b[rnd.randrange(len(b)) :]
    elif op == 2:  # delete a slice
        i = rnd.randrange(len(b))
        del b[i : i + rnd.randint(1, 40)]
    elif op == 3:  # duplicate a slice
        i = rnd.randrange(len(b))
        b[i:i] = b[i : i + rnd.randint(1, 40)]
    else:  # swap a value's type
        old, new = rnd.choice(SWAPS)
        return data.replace(old, new, 1)
    return bytes(b)


# -- ``ctxdoctor listen`` as a real process ----------------------------------------------------------

_BANNER = re.compile(r"OTLP/gRPC on \S+?:(\d+), OTLP/HTTP on \S+?:(\d+)")
_ZIPKIN = re.compile(r"Zipkin on \S+?:(\d+)")


class Listen:
    def __init__(
        self,
        dump: Path,
        *args: str,
        env: dict[str, str] | None = None,
        file_size_limit: int | None = None,
        ports: Sequence[str] = ("--port", "0", "--http-port", "0", "--zipkin-port", "0"),
        wait: bool = True,
        cwd: Path | None = None,
    ) -> None:
        self.dump = dump
        cmd = [sys.executable, "-m", "ctxdoctor", "listen", *ports, "--output", str(dump), *args]
        if file_size_limit is not None:
            cmd = with_file_size_limit(cmd, file_size_limit)
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.setdefault("COLUMNS", "200")
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=cwd,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err, False), daemon=True),
        ]
        for t in self._readers:
            t.start()
        self.grpc_port = self.http_port = self.zipkin_port = 0
        if wait:
            self._wait_banner()

    def _read(self, stream, sink: list[str], announce: bool) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            sink.append(line)
            if announce:
                self._lines.put(line)
        if announce:
            self._lines.put(None)

    def _wait_banner(self, timeout: float = 30.0) -> None:
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no banner from ctxdoctor listen; stderr: {''.join(self.err)}") from None
            if line is None:
                self.proc.wait(10)
                raise AssertionError(
                    f"ctxdoctor listen exited ({self.proc.returncode}) before listening: {''.join(self.err)}"
                )
            m = _BANNER.search(line)
            if m:
                self.grpc_port, self.http_port = int(m.group(1)), int(m.group(2))
                z = _ZIPKIN.search(line)
                self.zipkin_port = int(z.group(1)) if z else 0
                return

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def zipkin_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.zipkin_port}/api/v2/spans"

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> tuple[int, str, str]:
        """Signal it (unless it already exited) and return (exit code, stdout, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 60.0) -> tuple[int, str, str]:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        for t in self._readers:
            t.join(5)
        return rc, "".join(self.out), "".join(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def app_env(ids: Path, endpoint: str, protocol: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        CTXDOCTOR_IDS=str(ids),
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    env.update(extra)
    return env


def created_ids(ids: Path) -> list[tuple[int, int]]:
    out = []
    for line in ids.read_text().splitlines():
        t, s = line.split()
        out.append((int(t, 16), int(s, 16)))
    return out


def check_dump(dump: Path, created: list[tuple[int, int]]) -> list[Span]:
    """Every created span is in the dump, none twice, nothing else."""
    spans = read_paths([dump]).spans
    got = collections.Counter((s.trace_id, s.span_id) for s in spans)
    assert len(created) == len(set(created)), "the app recorded a span twice"
    dupes = [k for k, n in got.items() if n > 1]
    assert not dupes, f"{len(dupes)} spans written twice"
    assert set(got) == set(created), (
        f"missing {len(set(created) - set(got))}, unexpected {len(set(got) - set(created))}"
    )
    return spans


def run_ctxdoctor(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m ctxdoctor ARGS`` in ``cwd`` as a user would run it: no stdin, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "ctxdoctor", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_app(cmd: list[str], env: dict[str, str], timeout: float = 120) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"app failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


def run_python_app(
    tmp_path: Path, listen: Listen, protocol: str, rounds: int, tasks: int, per_task: int, **extra: str
) -> None:
    """The Python SDK app (a dispatcher handing tasks to a pool) exporting to ``listen``."""
    endpoint = listen.grpc_endpoint if protocol == "grpc" else listen.http_endpoint
    env = app_env(
        tmp_path / "ids.txt",
        endpoint,
        protocol,
        CTXDOCTOR_ROUNDS=str(rounds),
        CTXDOCTOR_TASKS=str(tasks),
        CTXDOCTOR_SPANS_PER_TASK=str(per_task),
        **extra,
    )
    run_app([sys.executable, str(APPS / "python_exporter.py")], env)


#: Sets the file size limit, then becomes the command (same pid, the limit inherited).
_LIMITED = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"
)


def with_file_size_limit(cmd: list[str], limit: int) -> list[str]:
    """``cmd`` run under a file size limit of ``limit`` bytes (a stand-in for a full disk).

    Not ``preexec_fn``: it runs Python between fork and exec, which is unsafe in a test process
    that has threads (gRPC's, the output readers'), and once in a while aborted the child before
    it started.
    """
    return [sys.executable, "-c", _LIMITED, str(limit), *cmd]


def send_until_full(listen: Listen) -> set[tuple[int, int]]:
    """Requests over both protocols until well past a full disk; the span ids acknowledged.
    Checks that the refused ones were answered UNAVAILABLE / 503."""
    accepted: set[tuple[int, int]] = set()
    grpc_refused = http_refused = 0
    with grpc.insecure_channel(f"127.0.0.1:{listen.grpc_port}") as ch:
        call = ch.unary_unary(EXPORT)
        for seed in range(1, 90):
            req, ids = make_request(seed, n=20)
            if seed % 2:
                conn = http.client.HTTPConnection("127.0.0.1", listen.http_port, timeout=10)
                conn.request(
                    "POST",
                    "/v1/traces",
                    body=req.SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf"},
                )
                status = conn.getresponse().status
                conn.close()
                assert status in (200, 503)
                if status == 200:
                    accepted |= ids
                else:
                    http_refused += 1
            else:
                try:
                    call(req.SerializeToString(), timeout=10)
                    accepted |= ids
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
                    assert "file size limit" in exc.details()
                    grpc_refused += 1
    assert accepted and grpc_refused and http_refused, (len(accepted), grpc_refused, http_refused)
    return accepted


def fill_the_disk(dump: Path, limit: int) -> tuple[Listen, set[tuple[int, int]], str, str]:
    """``listen`` under a file size limit of ``limit`` bytes, sent requests until well past it;
    it must stop cleanly. Returns it, the span ids acknowledged, and its output."""
    listen = Listen(dump, file_size_limit=limit)
    try:
        accepted = send_until_full(listen)
        rc, out, err = listen.stop()
    finally:
        listen.kill()
    assert rc == 0, err
    assert "Traceback" not in err, err
    return listen, accepted, out, err


# -- the receiver in process -------------------------------------------------------------------


def dump_ids(rcv: Receiver) -> list[tuple[int, int]]:
    assert rcv.flush(), "the dump did not catch up with the journal"
    return [(s.trace_id, s.span_id) for s in read_paths([rcv.output]).spans]


_alive_seed = [1000]


def assert_alive(rcv: Receiver) -> None:
    """A good request over each protocol is accepted and lands in the dump."""
    for proto in ("grpc", "http"):
        _alive_seed[0] += 1
        req, good = make_request(_alive_seed[0])
        if proto == "grpc":
            resp = grpc_call(rcv, req.SerializeToString())
            assert not resp.HasField("partial_success")
        else:
            status, _, _ = http_call(rcv, req.SerializeToString())
            assert status == 200
        assert good <= set(dump_ids(rcv))


def rpc_status(headers: dict[str, str], body: bytes) -> tuple[int, str]:
    if headers["content-type"] == "application/json":
        doc = json.loads(body)
        return doc["code"], doc["message"]
    st = status_pb2.Status.FromString(body)
    return st.code, st.message
