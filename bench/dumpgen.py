"""Seeded generator of realistic trace dumps for the benchmarks.

The dumps have to look like what a Collector writes overnight for a shop of a dozen services,
because the costs being measured depend on the shape: how many resources share a line, how many
attributes a span carries and of which types, how deep the trees are, how many spans run
concurrently in one process (the sweep for containing spans is only cheap when few do), and how
the lost-context cases are spread. So the topology has Node.js services with worker_threads and
piscina workers (one SDK resource per worker, ``thread.id`` on the resource), forked children
(``process.parent_pid``), Python thread pools and ``run_in_executor`` (``thread.id``/``thread.name``
as span attributes), Java services whose agent puts the thread on every span, and Go services.

Every dispatch to a worker either propagates context (a correct child, remote or local parent
flags as the SDKs set them) or loses it: the worker's span becomes an INTERNAL root of a new
trace that starts inside the dispatching span, in the same process (an orphan). About 5% of the
roots are orphans; the rest are SERVER entry spans, CONSUMER roots linked to their producer, health
checks, periodic jobs and startup work. A few spans lose their parent because a worker exited
without flushing (local parent) or the dispatching process died (remote parent).

Both encodings are produced by hand from the same records, with no protobuf or JSON library on the
hot path: OTLP/JSON lines in the Collector's strict form (hex ids, lowerCamelCase, integer enums,
int64 as strings, zero values omitted) and the Collector's ``proto`` file format (4-byte big-endian
length + ``ExportTraceServiceRequest``). The smoke test checks the two encodings against each other
through ctxdoctor's two independent readers. Output is a pure function of (seed, size): nothing
depends on the clock, hash seeds or set order.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import heapq
import json
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SIZES: dict[str, int] = {
    "10k": 10_000,
    "100k": 100_000,
    "1m": 1_000_000,
    "10m": 10_000_000,
}
DEFAULT_SEED = 6
SPANS_PER_LINE = 512
#: 2025-01-06T09:00:00Z: a Monday morning.
BASE_NS = 1_736_154_000_000_000_000
#: Entry traffic over the whole shop; with ~15 spans per trace a million spans last ~9 minutes.
TRACES_PER_SECOND = 120.0
MS = 1_000_000

SAMPLED = 0x01
IS_REMOTE_KNOWN = 0x100
PARENT_IS_REMOTE = 0x200
FLAGS_LOCAL = SAMPLED | IS_REMOTE_KNOWN
FLAGS_REMOTE = SAMPLED | IS_REMOTE_KNOWN | PARENT_IS_REMOTE

INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = 1, 2, 3, 4, 5
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

AttrValue = str | bool | int | float | tuple[str, ...]
Attr = tuple[str, AttrValue]

# ---------------------------------------------------------------------------------------------
# Encoding primitives (protobuf wire format and OTLP/JSON), cached where values repeat.
# ---------------------------------------------------------------------------------------------

_SMALL_VARINTS = [bytes((n,)) if n < 0x80 else b"" for n in range(0x80)]


def varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL_VARINTS[n]
    if n < 0:
        n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + varint(len(payload)) + payload


_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_pack_i = struct.Struct("<I").pack


def jstr(s: str) -> str:
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    return json.dumps(s, ensure_ascii=False)


def _any_value(v: AttrValue) -> tuple[str, bytes]:
    """AnyValue as (JSON, protobuf)."""
    if isinstance(v, bool):
        return ('{"boolValue":true}' if v else '{"boolValue":false}'), b"\x10" + (b"\x01" if v else b"\x00")
    if isinstance(v, int):
        return f'{{"intValue":"{v}"}}', b"\x18" + varint(v)
    if isinstance(v, float):
        return f'{{"doubleValue":{v!r}}}', b"\x21" + _pack_d(v)
    if isinstance(v, tuple):
        items = [_any_value(x) for x in v]
        j = '{"arrayValue":{"values":[' + ",".join(i[0] for i in items) + "]}}"
        return j, ld(b"\x2a", b"".join(ld(b"\x0a", i[1]) for i in items))
    b = v.encode()
    return f'{{"stringValue":{jstr(v)}}}', ld(b"\x0a", b)


@functools.lru_cache(maxsize=1 << 16, typed=True)
def enc_kv(key: str, value: AttrValue) -> tuple[str, bytes]:
    """KeyValue as (JSON, protobuf length + body); the caller prepends the field tag, which
    differs between resource (1), span (9), event (3) and link (4) attributes."""
    j, p = _any_value(value)
    body = ld(b"\x0a", key.encode()) + ld(b"\x12", p)
    return f'{{"key":{jstr(key)},"value":{j}}}', varint(len(body)) + body


@functools.lru_cache(maxsize=1 << 14)
def enc_name(name: str) -> tuple[str, bytes]:
    return jstr(name), ld(b"\x2a", name.encode())


def enc_attrs(attrs: tuple[Attr, ...], tag: bytes) -> tuple[str, bytes]:
    """Attributes as (JSON array body, repeated KeyValue under field ``tag``)."""
    if not attrs:
        return "", b""
    encs = [enc_kv(k, v) for k, v in attrs]
    return ",".join(e[0] for e in encs), b"".join([tag + e[1] for e in encs])


@dataclass(frozen=True)
class Event:
    time: int
    name: str
    attrs: tuple[Attr, ...] = ()


@dataclass(frozen=True)
class Link:
    trace_id: int
    span_id: int
    attrs: tuple[Attr, ...] = ()


@dataclass(frozen=True)
class Scope:
    name: str
    version: str
    json: str = field(init=False, repr=False, compare=False)
    proto: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "json", f'{{"name":{jstr(self.name)},"version":{jstr(self.version)}}}')
        object.__setattr__(
            self, "proto", ld(b"\x0a", ld(b"\x0a", self.name.encode()) + ld(b"\x12", self.version.encode()))
        )


class Resource:
    """One SDK instance: its resource attributes, pre-encoded once."""

    __slots__ = ("attrs", "index", "json", "language", "proto", "scopes", "service")

    def __init__(self, index: int, service: str, language: str, attrs: tuple[Attr, ...], scopes: tuple[Scope, ...]):
        self.index = index
        self.service = service
        self.language = language
        self.attrs = attrs
        self.scopes = scopes  # by scope kind: 0 http, 1 db, 2 app, 3 messaging
        j, p = enc_attrs(attrs, b"\x0a")
        self.json = '{"attributes":[' + j + "]}"
        self.proto = ld(b"\x0a", p)  # field 1 of ResourceSpans: Resource{attributes...}


class Unit:
    """Where a span runs: an SDK resource plus, for threads only visible in span attributes,
    the ``thread.id``/``thread.name`` attributes every span of that thread carries."""

    __slots__ = ("proc", "resource", "thread_attrs")

    def __init__(self, resource: Resource, proc: Process, thread_attrs: tuple[Attr, ...] = ()):
        self.resource = resource
        self.proc = proc
        self.thread_attrs = thread_attrs


class Process:
    __slots__ = ("children", "host", "main", "pid", "servers", "service", "workers")

    def __init__(self, service: Service, pid: int, host: str):
        self.service = service
        self.pid = pid
        self.host = host
        self.main: Unit
        self.servers: list[Unit] = []  # threads that serve requests (several only where spans name them)
        self.workers: list[Unit] = []  # worker threads or child processes' units
        self.children: list[Process] = []


@dataclass
class Service:
    name: str
    language: str
    instances: int
    model: str  # plain, worker_threads, piscina, fork, threadpool, executor, multiprocessing, java
    route: str  # the SERVER span name others call
    db: str | None = None
    downstream: tuple[tuple[str, float], ...] = ()
    work: str = ""  # name of the span a worker runs
    lost: float = 0.0  # share of dispatches that lose context
    periodic: str = ""  # a periodic background job (legitimate INTERNAL root)
    period_s: float = 0.0
    processes: list[Process] = field(default_factory=list)


# Span record: what both encoders consume.
# (trace_id, span_id, parent_id, name, kind, start, end, flags, attrs, events, links, status, status_msg,
#  unit, scope_kind)
Rec = tuple[
    int, int, int, str, int, int, int, int, tuple[Attr, ...], tuple[Event, ...], tuple[Link, ...], int, str, Unit, int
]


_TID = b"\x0a\x10"
_SID = b"\x12\x08"
_PID = b"\x22\x08"
_START = b"\x39"
_END = b"\x41"
_FLAGS = b"\x85\x01"
_KIND = [b"\x30" + varint(k) for k in range(6)]
_STATUS_UNSET_PB = b"\x7a\x00"


def encode_span(r: Rec) -> tuple[str, bytes]:
    """One span as (OTLP/JSON object, protobuf ``Span`` body); fields in the order the Collector
    writes them in JSON and in field-number order in protobuf, zero values omitted."""
    trace_id, span_id, parent, name, kind, start, end, flags, attrs, events, links, status, smsg, unit, _ = r
    jname, pname = enc_name(name)
    if parent:
        j = (
            f'{{"traceId":"{trace_id:032x}","spanId":"{span_id:016x}","parentSpanId":"{parent:016x}",'
            f'"flags":{flags},"name":{jname},"kind":{kind},"startTimeUnixNano":"{start}","endTimeUnixNano":"{end}"'
        )
        p = [_TID, trace_id.to_bytes(16, "big"), _SID, span_id.to_bytes(8, "big"), _PID, parent.to_bytes(8, "big")]
    else:
        j = (
            f'{{"traceId":"{trace_id:032x}","spanId":"{span_id:016x}",'
            f'"flags":{flags},"name":{jname},"kind":{kind},"startTimeUnixNano":"{start}","endTimeUnixNano":"{end}"'
        )
        p = [_TID, trace_id.to_bytes(16, "big"), _SID, span_id.to_bytes(8, "big")]
    p += (pname, _KIND[kind], _START, _pack_q(start), _END, _pack_q(end))
    jparts = [j]
    all_attrs = attrs + unit.thread_attrs if unit.thread_attrs else attrs
    if all_attrs:
        encs = [enc_kv(k, v) for k, v in all_attrs]
        jparts.append(',"attributes":[' + ",".join([e[0] for e in encs]) + "]")
        p += [b"\x4a" + e[1] for e in encs]
    if events:
        evs = []
        for ev in events:
            e = f'{{"timeUnixNano":"{ev.time}","name":{jstr(ev.name)}'
            body = b"\x09" + _pack_q(ev.time) + ld(b"\x12", ev.name.encode())
            if ev.attrs:
                ej, ep = enc_attrs(ev.attrs, b"\x1a")
                e += ',"attributes":[' + ej + "]"
                body += ep
            evs.append(e + "}")
            p.append(ld(b"\x5a", body))
        jparts.append(',"events":[' + ",".join(evs) + "]")
    if links:
        lks = []
        for lk in links:
            x = f'{{"traceId":"{lk.trace_id:032x}","spanId":"{lk.span_id:016x}"'
            body = _TID + lk.trace_id.to_bytes(16, "big") + _SID + lk.span_id.to_bytes(8, "big")
            if lk.attrs:
                lj, lp = enc_attrs(lk.attrs, b"\x22")
                x += ',"attributes":[' + lj + "]"
                body += lp
            lks.append(x + ',"flags":257}')
            p.append(ld(b"\x6a", body + b"\x35" + _pack_i(257)))
        jparts.append(',"links":[' + ",".join(lks) + "]")
    if status:
        if smsg:
            jparts.append(f',"status":{{"message":{jstr(smsg)},"code":{status}}}}}')
            p.append(ld(b"\x7a", ld(b"\x12", smsg.encode()) + b"\x18" + varint(status)))
        else:
            jparts.append(f',"status":{{"code":{status}}}}}')
            p.append(ld(b"\x7a", b"\x18" + varint(status)))
    else:
        jparts.append(',"status":{}}')
        p.append(_STATUS_UNSET_PB)
    p += (_FLAGS, _pack_i(flags))
    return "".join(jparts), b"".join(p)


# ---------------------------------------------------------------------------------------------
# The shop: services, processes, threads and the SDK resources they report.
# ---------------------------------------------------------------------------------------------

_SCOPES: dict[str, tuple[tuple[str, str], ...]] = {
    # http, db, app, messaging
    "nodejs": (
        ("@opentelemetry/instrumentation-http", "0.223.0"),
        ("@opentelemetry/instrumentation-pg", "0.61.0"),
        ("{service}", "1.14.2"),
        ("@opentelemetry/instrumentation-amqplib", "0.56.0"),
    ),
    "python": (
        ("opentelemetry.instrumentation.flask", "0.66b2"),
        ("opentelemetry.instrumentation.psycopg", "0.66b2"),
        ("{service}.tasks", "2.3.0"),
        ("opentelemetry.instrumentation.pika", "0.66b2"),
    ),
    "java": (
        ("io.opentelemetry.tomcat-10.0", "2.24.0-alpha"),
        ("io.opentelemetry.jdbc", "2.24.0-alpha"),
        ("io.opentelemetry.opentelemetry-instrumentation-annotations-1.16", "2.24.0-alpha"),
        ("io.opentelemetry.rabbitmq-2.7", "2.24.0-alpha"),
    ),
    "go": (
        ("go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "0.63.0"),
        ("github.com/XSAM/otelsql", "0.40.0"),
        ("shop/{service}", "0.9.1"),
        ("go.opentelemetry.io/contrib/instrumentation/github.com/rabbitmq/amqp091-go", "0.4.0"),
    ),
}
SCOPE_HTTP, SCOPE_DB, SCOPE_APP, SCOPE_MSG = 0, 1, 2, 3

_SDK = {
    "nodejs": (
        ("telemetry.sdk.name", "opentelemetry"),
        ("telemetry.sdk.version", "2.12.0"),
        ("process.runtime.name", "nodejs"),
        ("process.runtime.version", "20.19.5"),
        ("process.executable.name", "node"),
    ),
    "python": (
        ("telemetry.sdk.name", "opentelemetry"),
        ("telemetry.sdk.version", "1.45.2"),
        ("process.runtime.name", "cpython"),
        ("process.runtime.version", "3.11.14"),
        ("process.executable.name", "python3"),
    ),
    "java": (
        ("telemetry.sdk.name", "opentelemetry"),
        ("telemetry.sdk.version", "1.55.0"),
        ("telemetry.distro.name", "opentelemetry-java-instrumentation"),
        ("process.runtime.name", "OpenJDK Runtime Environment"),
        ("process.runtime.version", "21.0.8+9-LTS"),
    ),
    "go": (
        ("telemetry.sdk.name", "opentelemetry"),
        ("telemetry.sdk.version", "1.38.0"),
        ("process.runtime.name", "go"),
        ("process.runtime.version", "go1.24.9"),
    ),
}

_FRONTEND_ROUTES: tuple[tuple[str, str, float, tuple[tuple[str, float], ...]], ...] = (
    # method+route, concrete path prefix, weight, downstream calls (service, probability)
    (
        "GET /product/{id}",
        "/product/",
        0.35,
        (("auth", 0.5), ("search", 0.3), ("recommendations", 0.7), ("image-resizer", 0.6)),
    ),
    ("GET /search", "/search?q=", 0.20, (("search", 1.0), ("image-resizer", 0.3))),
    ("GET /", "/", 0.18, (("recommendations", 0.5), ("image-resizer", 0.4))),
    ("POST /checkout", "/checkout", 0.12, (("auth", 1.0), ("checkout-api", 1.0))),
    ("GET /cart", "/cart", 0.12, (("auth", 0.6), ("inventory", 0.4))),
    ("POST /reports", "/reports", 0.03, (("auth", 1.0), ("report-builder", 1.0))),
)
_ROUTE_WEIGHTS = [r[2] for r in _FRONTEND_ROUTES]


def _services() -> list[Service]:
    return [
        Service("frontend", "nodejs", 4, "plain", "GET /"),
        Service(
            "checkout-api",
            "nodejs",
            3,
            "plain",
            "POST /api/checkout",
            db="postgresql",
            downstream=(
                ("payments", 0.95),
                ("orders", 0.95),
                ("inventory", 0.5),
                ("pdf-renderer", 0.5),
                ("notifications", 0.5),
                ("shipping", 0.6),
            ),
        ),
        Service("image-resizer", "nodejs", 3, "worker_threads", "GET /img/{id}", work="resize image", lost=0.5),
        Service("pdf-renderer", "nodejs", 2, "piscina", "POST /render/invoice", work="render invoice", lost=0.9),
        Service("notifications", "nodejs", 2, "fork", "POST /notify", work="send push", lost=0.2),
        Service(
            "inventory",
            "python",
            3,
            "threadpool",
            "POST /reserve",
            db="postgresql",
            work="reserve stock",
            lost=0.4,
            periodic="refresh stock cache",
            period_s=2.0,
        ),
        Service(
            "report-builder", "python", 2, "executor", "POST /reports", db="postgresql", work="build report", lost=0.8
        ),
        Service(
            "recommendations",
            "python",
            2,
            "multiprocessing",
            "GET /recommendations",
            work="score candidates",
            lost=0.2,
            periodic="reload model",
            period_s=30.0,
        ),
        Service("payments", "go", 3, "plain", "POST /v1/charges", db="postgresql"),
        Service("auth", "go", 2, "plain", "GET /v1/session", db="redis"),
        Service(
            "orders",
            "java",
            3,
            "java",
            "POST /orders",
            db="postgresql",
            downstream=(("inventory", 0.3),),
            work="persist order",
        ),
        Service("search", "java", 2, "java", "GET /search", db="elasticsearch", work="rank results"),
        Service("shipping", "python", 2, "plain", "POST /quotes", db="mysql"),
        Service(
            "email-sender",
            "python",
            2,
            "plain",
            "orders process",
            db="postgresql",
            periodic="retry failed emails",
            period_s=10.0,
        ),
    ]


_WORKERS = {
    "worker_threads": 4,
    "piscina": 4,
    "fork": 2,
    "threadpool": 8,
    "executor": 4,
    "multiprocessing": 3,
    "java": 6,
}
_DB_QUERIES = {
    "postgresql": (
        ("SELECT", "orders", "SELECT id, status, total FROM orders WHERE id = $1"),
        ("SELECT", "products", "SELECT id, name, price FROM products WHERE id = ANY($1)"),
        ("INSERT", "orders", "INSERT INTO orders (id, customer_id, total) VALUES ($1, $2, $3)"),
        ("UPDATE", "stock", "UPDATE stock SET reserved = reserved + $1 WHERE sku = $2"),
    ),
    "mysql": (("SELECT", "rates", "SELECT carrier, price FROM rates WHERE zone = ? AND weight <= ?"),),
    "redis": (("GET", "", "GET session:?"), ("EXPIRE", "", "EXPIRE session:? 1800")),
    "elasticsearch": (("search", "products", 'GET /products/_search {"query":{"match":{"name":"?"}}}'),),
}
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "okhttp/4.12.0",
)
_ERRORS = (
    ("TimeoutError", "upstream request timed out after 2000 ms"),
    ("ConnectionResetError", "[Errno 104] Connection reset by peer"),
    ("Error", "ECONNREFUSED 10.0.3.17:5432"),
    ("java.sql.SQLTransientConnectionException", "HikariPool-1 - Connection is not available, request timed out"),
    ("ValueError", "invalid literal for int() with base 10: 'n/a' — «bad input»"),
)


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def _uuid(rng: random.Random) -> str:
    h = _hex(rng, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


class Topology:
    def __init__(self, rng: random.Random):
        self.resources: list[Resource] = []
        self.services = {s.name: s for s in _services()}
        hosts = [
            f"ip-10-0-{rng.randrange(1, 255)}-{rng.randrange(1, 255)}.eu-west-1.compute.internal" for _ in range(12)
        ]
        for svc in self.services.values():
            scopes = tuple(Scope(n.format(service=svc.name), v) for n, v in _SCOPES[svc.language])
            for _ in range(svc.instances):
                host = hosts[rng.randrange(len(hosts))]
                pid = rng.randrange(7, 60000)
                proc = Process(svc, pid, host)
                pod = f"{svc.name}-{_hex(rng, 10)[:10]}-{_hex(rng, 5)}"
                base: tuple[Attr, ...] = (
                    ("service.name", svc.name),
                    ("service.namespace", "shop"),
                    ("service.version", f"{rng.randrange(1, 4)}.{rng.randrange(0, 20)}.{rng.randrange(0, 9)}"),
                    ("deployment.environment.name", "production"),
                    ("host.name", host),
                    ("host.arch", "amd64"),
                    ("os.type", "linux"),
                    ("k8s.namespace.name", "shop"),
                    ("k8s.pod.name", pod),
                    ("container.id", _hex(rng, 64)),
                    ("telemetry.sdk.language", svc.language),
                    *_SDK[svc.language],
                )
                if svc.language in ("java", "go", "python"):
                    base += (("service.instance.id", _uuid(rng)),)
                cmd = {
                    "nodejs": f"/app/dist/{svc.name}/server.js",
                    "python": f"/app/.venv/bin/gunicorn {svc.name}.app",
                    "java": f"/opt/java/bin/java -javaagent:/otel/opentelemetry-javaagent.jar -jar {svc.name}.jar",
                    "go": f"/usr/local/bin/{svc.name}",
                }[svc.language]
                proc_attrs = (("process.pid", pid), ("process.command_line", cmd), ("process.owner", "app"))
                nworkers = _WORKERS.get(svc.model, 0)
                if svc.model in ("worker_threads", "piscina"):
                    # One SDK per isolate: the main thread and each worker report their own resource.
                    main_res = base + proc_attrs + (("thread.id", 0), ("thread.type", "main"))
                    proc.main = Unit(self._resource(svc, main_res, scopes), proc)
                    for w in range(1, nworkers + 1):
                        res = self._resource(
                            svc, base + proc_attrs + (("thread.id", w), ("thread.type", "worker")), scopes
                        )
                        proc.workers.append(Unit(res, proc))
                elif svc.model in ("fork", "multiprocessing"):
                    proc.main = Unit(self._resource(svc, base + proc_attrs, scopes), proc)
                    for _ in range(nworkers):
                        cpid = rng.randrange(7, 60000)
                        child = Process(svc, cpid, host)
                        cattrs = (
                            ("process.pid", cpid),
                            ("process.parent_pid", pid),
                            (
                                "process.command_line",
                                cmd + (" --worker" if svc.language == "nodejs" else " (multiprocessing worker)"),
                            ),
                            ("process.owner", "app"),
                        )
                        child.main = Unit(self._resource(svc, base + cattrs, scopes), child)
                        proc.children.append(child)
                        proc.workers.append(child.main)
                elif svc.model in ("threadpool", "executor", "java"):
                    res = self._resource(svc, base + proc_attrs, scopes)
                    if svc.language == "java":
                        main_attrs: tuple[Attr, ...] = (("thread.id", 31), ("thread.name", "http-nio-8080-exec-1"))
                        names = [f"pool-2-thread-{t + 1}" for t in range(nworkers)]
                        tids = [40 + t for t in range(nworkers)]
                    else:
                        main_attrs = (
                            ("thread.id", 140_000_000_000_000 + rng.getrandbits(32)),
                            ("thread.name", "MainThread"),
                        )
                        prefix = "ThreadPoolExecutor-0_" if svc.model == "threadpool" else "asyncio_"
                        names = [f"{prefix}{t}" for t in range(nworkers)]
                        tids = [140_000_000_000_000 + rng.getrandbits(32) for _ in range(nworkers)]
                    proc.main = Unit(res, proc, main_attrs)
                    if svc.language == "java":
                        proc.servers = [
                            Unit(res, proc, (("thread.id", 31 + t), ("thread.name", f"http-nio-8080-exec-{t + 1}")))
                            for t in range(8)
                        ]
                    proc.workers = [
                        Unit(res, proc, (("thread.id", tid), ("thread.name", name)))
                        for tid, name in zip(tids, names, strict=True)
                    ]
                else:
                    proc.main = Unit(self._resource(svc, base + proc_attrs, scopes), proc)
                if not proc.servers:
                    proc.servers = [proc.main]
                svc.processes.append(proc)
        self.processes = [p for s in self.services.values() for p in s.processes]

    def _resource(self, svc: Service, attrs: tuple[Attr, ...], scopes: tuple[Scope, ...]) -> Resource:
        res = Resource(len(self.resources), svc.name, svc.language, attrs, scopes)
        self.resources.append(res)
        return res


# ---------------------------------------------------------------------------------------------
# Traffic: traces, dispatches to workers (propagated or lost), background roots.
# ---------------------------------------------------------------------------------------------

#: Request traces are capped at 3 to 6 levels, with these weights.
DEPTHS = (3, 4, 5, 6)
DEPTH_WEIGHTS = (0.2, 0.3, 0.3, 0.2)
#: Scales every service's share of lost dispatches so that ~5% of all roots are orphans.
LOST_SCALE = 0.8
#: A worker exits before its top span is flushed (children keep a local parent that never arrives).
P_WORKER_EXIT = 0.01
#: The dispatching span is never ended, so never exported (the worker's span loses its parent).
P_DISPATCH_LEAK = 0.005
P_ERROR = 0.01


@dataclass
class Stats:
    spans: int = 0
    traces: int = 0
    roots: int = 0
    server_roots: int = 0
    consumer_roots: int = 0
    internal_roots: int = 0
    orphans: int = 0
    orphans_cross_process: int = 0
    missing_parent: int = 0
    missing_parent_remote: int = 0
    dispatches: int = 0
    spans_with_events: int = 0
    spans_with_links: int = 0
    error_spans: int = 0
    lines: int = 0
    depth: dict[int, int] = field(default_factory=dict)


class Generator:
    """Streams lines of span records; see the module docstring for what the traffic looks like."""

    def __init__(self, seed: int = DEFAULT_SEED):
        self.rng = random.Random(seed)
        self.topo = Topology(self.rng)
        self.svc = self.topo.services
        self.now = BASE_NS
        self.stats = Stats()
        # The trace (or background event) being generated; committed whole or not at all.
        self._cur: list[Rec] = []
        self._cur_later: list[Rec] = []
        self._cur_truth: list[str] = []
        self._cur_stats: dict[str, int] = {}
        self._cur_traces = 0
        self._cur_depth = 0
        self._max_depth = DEPTHS[-1]
        self._pending: list[Rec] = []
        self._later: list[tuple[int, int, list[Rec]]] = []  # (release at event no, seq, records)
        self._events = 0
        self._timers: list[tuple[int, int, str, object]] = []
        self._seq = 0
        self.truth: list[str] = []
        for proc in self.topo.processes:
            self._timer(BASE_NS + self._ms(0, 2000), "startup", proc)
            self._timer(BASE_NS + self._ms(0, 10_000), "healthz", proc)
            if proc.service.periodic:
                self._timer(BASE_NS + self._ms(0, proc.service.period_s * 1000), "periodic", proc)

    # -- helpers ------------------------------------------------------------------------------
    def _id(self) -> int:
        return self.rng.getrandbits(64) or 1

    def _ms(self, lo: float, hi: float) -> int:
        return int(self.rng.uniform(lo, hi) * MS)

    def _us(self, lo: float, hi: float) -> int:
        return int(self.rng.uniform(lo, hi) * 1000)

    def _timer(self, at: int, kind: str, arg: object) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (at, self._seq, kind, arg))

    def _new_trace(self) -> int:
        self._cur_traces += 1
        return self.rng.getrandbits(128) or 1

    def _count(self, key: str, n: int = 1) -> None:
        self._cur_stats[key] = self._cur_stats.get(key, 0) + n

    def _emit(self, r: Rec, later: bool, depth: int) -> None:
        (self._cur_later if later else self._cur).append(r)
        if depth > self._cur_depth:
            self._cur_depth = depth
        if r[9]:
            self._count("spans_with_events")
        if r[10]:
            self._count("spans_with_links")
        if r[11] == STATUS_ERROR:
            self._count("error_spans")

    def _truth(self, r: Rec, label: str, intended: Rec | None = None, parent_remote: bool | None = None) -> None:
        obj: dict[str, object] = {"trace_id": f"{r[0]:032x}", "span_id": f"{r[1]:016x}", "name": r[3], "label": label}
        obj["intended_parent"] = (
            {"trace_id": f"{intended[0]:032x}", "span_id": f"{intended[1]:016x}", "name": intended[3]}
            if intended is not None
            else None
        )
        obj["parent_remote"] = parent_remote
        self._cur_truth.append(json.dumps(obj, separators=(",", ":")))

    def _root(self, r: Rec) -> None:
        self._count("roots")
        self._count({SERVER: "server_roots", CONSUMER: "consumer_roots"}.get(r[4], "internal_roots"))
        self._truth(r, "root")

    def _error(self) -> tuple[tuple[Event, ...], int, str, tuple[str, str]] | None:
        if self.rng.random() >= P_ERROR:
            return None
        etype, emsg = _ERRORS[self.rng.randrange(len(_ERRORS))]
        ev = Event(
            self.now,
            "exception",
            (
                ("exception.type", etype),
                ("exception.message", emsg),
                (
                    "exception.stacktrace",
                    f"{etype}: {emsg}\n    at handle (/app/dist/handler.js:42:17)\n"
                    "    at process.processTicksAndRejections (node:internal/process/task_queues:95)",
                ),
            ),
        )
        return (ev,), STATUS_ERROR, emsg, (etype, emsg)

    # -- span shapes ------------------------------------------------------------------------------
    def _db(self, tid: int, parent: int, svc: Service, unit: Unit, t: int, depth: int, later: bool) -> int:
        system = svc.db or "postgresql"
        op, table, query = _DB_QUERIES[system][self.rng.randrange(len(_DB_QUERIES[system]))]
        dur = min(int(self.rng.lognormvariate(0.3, 0.9) * MS), 400 * MS)
        attrs: tuple[Attr, ...] = (
            ("db.system.name", system),
            ("db.namespace", "shop"),
            ("db.operation.name", op),
            ("db.query.text", query),
            ("server.address", f"{system}.shop.svc.cluster.local"),
            ("server.port", {"postgresql": 5432, "mysql": 3306, "redis": 6379}.get(system, 9200)),
        )
        if table:
            attrs += (("db.collection.name", table),)
        name = f"{op} shop.{table}" if table else op
        err = self._error()
        events, status, smsg = (err[0], err[1], err[2]) if err else ((), 0, "")
        if err:
            attrs += (("error.type", err[3][0]),)
        self._emit(
            (
                tid,
                self._id(),
                parent,
                name,
                CLIENT,
                t,
                t + dur,
                FLAGS_LOCAL,
                attrs,
                events,
                (),
                status,
                smsg,
                unit,
                SCOPE_DB,
            ),
            later,
            depth,
        )
        return t + dur

    def _http_client(self, tid: int, parent: int, target: Service, unit: Unit, t: int, depth: int, later: bool) -> int:
        sid = self._id()
        method, path = target.route.split(" ", 1)
        start = t
        if depth + 1 <= self._max_depth:
            served = self._server(tid, sid, FLAGS_REMOTE, target, t + self._us(200, 900), depth + 1, later)
            end = served + self._us(100, 600)
        else:
            end = t + self._ms(1, 30)
        code = 200 if self.rng.random() > 0.02 else 503
        attrs: tuple[Attr, ...] = (
            ("http.request.method", method),
            ("url.full", f"http://{target.name}.shop.svc:8080{path}"),
            ("server.address", f"{target.name}.shop.svc"),
            ("server.port", 8080),
            ("network.peer.address", f"10.0.{self.rng.randrange(256)}.{self.rng.randrange(256)}"),
            ("http.response.status_code", code),
        )
        status, smsg = (STATUS_ERROR, "") if code >= 500 else (STATUS_UNSET, "")
        if code >= 500:
            attrs += (("error.type", str(code)),)
        self._emit(
            (tid, sid, parent, method, CLIENT, start, end, FLAGS_LOCAL, attrs, (), (), status, smsg, unit, SCOPE_HTTP),
            later,
            depth,
        )
        return end

    def _server(
        self,
        tid: int,
        parent: int,
        flags: int,
        svc: Service,
        start: int,
        depth: int,
        later: bool,
        route: tuple[str, str, float, tuple[tuple[str, float], ...]] | None = None,
    ) -> int:
        proc = svc.processes[self.rng.randrange(len(svc.processes))]
        unit = proc.servers[self.rng.randrange(len(proc.servers))]
        sid = self._id()
        t = start + self._us(20, 300)
        if depth < self._max_depth and svc.language == "nodejs" and self.rng.random() < 0.5:
            mw = ("middleware - query", "middleware - jsonParser", "middleware - session")[self.rng.randrange(3)]
            end = t + self._us(30, 400)
            self._emit(
                (
                    tid,
                    self._id(),
                    sid,
                    mw,
                    INTERNAL,
                    t,
                    end,
                    FLAGS_LOCAL,
                    (("express.type", "middleware"),),
                    (),
                    (),
                    0,
                    "",
                    unit,
                    SCOPE_HTTP,
                ),
                later,
                depth + 1,
            )
            t = end
        parent_of_body, body_depth = sid, depth + 1
        wrap = depth + 1 < self._max_depth and (svc.language == "java" or self.rng.random() < 0.4)
        hsid, hstart = 0, t
        if wrap:
            hsid = self._id()
            parent_of_body, body_depth = hsid, depth + 2
            t += self._us(10, 100)
        calls = route[3] if route is not None else svc.downstream
        t = self._body(tid, parent_of_body, svc, proc, unit, t, body_depth, calls, later)
        if wrap:
            hend = t + self._us(5, 60)
            handler = svc.route.split(" ", 1)[1].strip("/").split("/")[0] or "index"
            fn = f"{svc.name.replace('-', '_')}.handlers.{handler}"
            attrs: tuple[Attr, ...] = (
                ("code.function.name", fn),
                ("app.items", self.rng.randrange(1, 40)),
                ("app.cache.hit", self.rng.random() < 0.7),
            )
            self._emit(
                (
                    tid,
                    hsid,
                    sid,
                    fn if svc.language != "java" else "OrdersController.handle",
                    INTERNAL,
                    hstart,
                    hend,
                    FLAGS_LOCAL,
                    attrs,
                    (),
                    (),
                    0,
                    "",
                    unit,
                    SCOPE_APP,
                ),
                later,
                depth + 1,
            )
            t = hend
        end = t + self._us(20, 200)
        name = route[0] if route is not None else svc.route
        method, rt = name.split(" ", 1)
        path = (route[1] + str(self.rng.randrange(10_000, 99_999))) if route is not None and "{" in rt else rt
        err = self._error()
        code = 500 if err else (200 if method == "GET" else 201)
        attrs = (
            ("http.request.method", method),
            ("url.path", path),
            ("url.scheme", "http"),
            ("http.route", rt),
            ("http.response.status_code", code),
            ("server.address", f"{svc.name}.shop.svc"),
            ("server.port", 8080),
            ("network.protocol.version", "1.1"),
            ("client.address", f"10.0.{self.rng.randrange(256)}.{self.rng.randrange(256)}"),
        )
        if route is not None:
            attrs += (("user_agent.original", _USER_AGENTS[self.rng.randrange(len(_USER_AGENTS))]),)
        events, status, smsg = (err[0], err[1], "") if err else ((), 0, "")
        r: Rec = (tid, sid, parent, name, SERVER, start, end, flags, attrs, events, (), status, smsg, unit, SCOPE_HTTP)
        self._emit(r, later, depth)
        if not parent:
            self._root(r)
        return end

    def _body(
        self,
        tid: int,
        parent: int,
        svc: Service,
        proc: Process,
        unit: Unit,
        t: int,
        depth: int,
        calls: tuple[tuple[str, float], ...],
        later: bool,
    ) -> int:
        if depth > self._max_depth:
            return t
        rng = self.rng
        if svc.db:
            for _ in range(rng.randrange(1, 4)):
                t = self._db(tid, parent, svc, unit, t, depth, later) + self._us(20, 300)
        chosen = [self.svc[name] for name, p in calls if rng.random() < p]
        if chosen:
            if len(chosen) > 1 and rng.random() < 0.3:  # Promise.all / asyncio.gather
                t = max(
                    self._http_client(tid, parent, target, unit, t + self._us(5, 50), depth, later) for target in chosen
                )
            else:
                for target in chosen:
                    t = self._http_client(tid, parent, target, unit, t, depth, later) + self._us(20, 200)
        if svc.work and depth < self._max_depth:
            t = self._dispatch(tid, parent, svc, proc, unit, t, depth, later) + self._us(10, 100)
        if svc.name == "orders" and depth <= self._max_depth:
            sid = self._id()
            end = t + self._us(200, 1500)
            attrs: tuple[Attr, ...] = (
                ("messaging.system", "rabbitmq"),
                ("messaging.destination.name", "orders"),
                ("messaging.operation.type", "send"),
                ("messaging.message.id", _uuid(rng)),
            )
            r: Rec = (
                tid,
                sid,
                parent,
                "orders publish",
                PRODUCER,
                t,
                end,
                FLAGS_LOCAL,
                attrs,
                (),
                (),
                0,
                "",
                unit,
                SCOPE_MSG,
            )
            self._emit(r, later, depth)
            self._timer(end + self._ms(2, 40), "consume", r)
            t = end
        return t

    def _dispatch(
        self, tid: int, parent: int, svc: Service, proc: Process, unit: Unit, t: int, depth: int, later: bool
    ) -> int:
        """Hand work to a worker; the worker's span is a child, or (context lost) an orphan root."""
        rng = self.rng
        self._count("dispatches")
        dsid = self._id()
        worker = proc.workers[rng.randrange(len(proc.workers))]
        separate_sdk = worker.resource is not unit.resource
        dname = {
            "worker_threads": f"dispatch {svc.work}",
            "piscina": "piscina.run render-invoice",
            "fork": "fork notify-worker",
            "threadpool": "executor.submit reserve_stock",
            "executor": "run_in_executor build_report",
            "multiprocessing": "pool.apply_async score",
            "java": "ExecutorService.submit",
        }[svc.model]
        ws = t + self._us(50, 1500)
        drec_stub: Rec = (tid, dsid, parent, dname, INTERNAL, t, t, FLAGS_LOCAL, (), (), (), 0, "", unit, SCOPE_APP)
        lost = rng.random() < svc.lost * LOST_SCALE
        leak = False
        if lost:
            otid = self._new_trace()
            we = self._work(otid, 0, FLAGS_LOCAL, svc, worker, ws, 1, drec_stub, exits=False)
            self._count("orphans")
            if worker.proc is not proc:
                self._count("orphans_cross_process")
        else:
            leak = rng.random() < P_DISPATCH_LEAK
            exits = not leak and rng.random() < P_WORKER_EXIT
            flags = FLAGS_REMOTE if separate_sdk else FLAGS_LOCAL
            we = self._work(
                tid,
                dsid,
                flags,
                svc,
                worker,
                ws,
                depth + 1,
                None,
                exits=exits,
                parent_missing=leak,
                parent_remote=separate_sdk,
            )
        de = we + self._us(50, 600)
        attrs: tuple[Attr, ...] = (("app.task", svc.work), ("app.queue.depth", rng.randrange(0, 12)))
        if not leak:
            self._emit(
                (tid, dsid, parent, dname, INTERNAL, t, de, FLAGS_LOCAL, attrs, (), (), 0, "", unit, SCOPE_APP),
                later,
                depth,
            )
        return de

    def _work(
        self,
        tid: int,
        parent: int,
        flags: int,
        svc: Service,
        unit: Unit,
        start: int,
        depth: int,
        intended: Rec | None,
        exits: bool,
        parent_missing: bool = False,
        parent_remote: bool = False,
    ) -> int:
        """The worker's span and its children; exported by the worker's SDK, so later."""
        rng = self.rng
        wsid = self._id()
        t = start + self._us(10, 120)
        kids: list[Rec] = []
        nkids = rng.randrange(1, 3) if exits else rng.randrange(0, 4)
        if depth < self._max_depth:
            for _ in range(nkids):
                if svc.db and rng.random() < 0.5:
                    before = len(self._cur_later)
                    t = self._db(tid, wsid, svc, unit, t, depth + 1, True) + self._us(10, 200)
                    kids.extend(self._cur_later[before:])
                else:
                    step = ("decode", "transform", "encode", "upload")[rng.randrange(4)]
                    end = t + self._ms(0.5, 25)
                    if step == "upload":
                        r: Rec = (
                            tid,
                            self._id(),
                            wsid,
                            "PUT",
                            CLIENT,
                            t,
                            end,
                            FLAGS_LOCAL,
                            (
                                ("http.request.method", "PUT"),
                                ("server.address", "s3.eu-west-1.amazonaws.com"),
                                ("http.response.status_code", 200),
                                ("app.bytes", rng.randrange(1 << 10, 1 << 24)),
                            ),
                            (),
                            (),
                            0,
                            "",
                            unit,
                            SCOPE_HTTP,
                        )
                    else:
                        r = (
                            tid,
                            self._id(),
                            wsid,
                            step,
                            INTERNAL,
                            t,
                            end,
                            FLAGS_LOCAL,
                            (("app.step", step), ("app.ratio", round(rng.random(), 4))),
                            (),
                            (),
                            0,
                            "",
                            unit,
                            SCOPE_APP,
                        )
                    self._emit(r, True, depth + 1)
                    kids.append(r)
                    t = end + self._us(10, 200)
        else:
            t += self._ms(0.5, 40)
        end = t + self._us(20, 300)
        attrs: tuple[Attr, ...] = (
            ("app.job.id", f"job-{rng.getrandbits(40):010x}"),
            ("app.input.bytes", rng.randrange(1 << 10, 1 << 22)),
            ("app.retry", rng.random() < 0.05),
        )
        if rng.random() < 0.1:
            attrs += (("app.tags", ("batch", "priority" if rng.random() < 0.3 else "normal", svc.name)),)
        err = self._error()
        events, status, smsg = (err[0], err[1], err[2]) if err else ((), 0, "")
        r = (tid, wsid, parent, svc.work, INTERNAL, start, end, flags, attrs, events, (), status, smsg, unit, SCOPE_APP)
        if exits:
            for k in kids:
                self._truth(k, "missing_parent", parent_remote=False)
            self._count("missing_parent", len(kids))
        else:
            self._emit(r, True, depth)
            if intended is not None:
                self._truth(r, "orphan", intended=intended)
            elif parent_missing:
                self._truth(r, "missing_parent", parent_remote=parent_remote)
                self._count("missing_parent")
                if parent_remote:
                    self._count("missing_parent_remote")
        return end

    # -- traffic ---------------------------------------------------------------------------------
    def _request(self) -> None:
        route = _FRONTEND_ROUTES[self.rng.choices(range(len(_FRONTEND_ROUTES)), _ROUTE_WEIGHTS)[0]]
        self._max_depth = self.rng.choices(DEPTHS, DEPTH_WEIGHTS)[0]
        self._server(self._new_trace(), 0, FLAGS_LOCAL, self.svc["frontend"], self.now, 1, False, route)

    def _background(self, kind: str, arg: object) -> None:
        rng = self.rng
        if kind == "consume":
            prod = arg
            assert isinstance(prod, tuple)
            svc = self.svc["email-sender"]
            proc = svc.processes[rng.randrange(len(svc.processes))]
            tid, sid, t = self._new_trace(), self._id(), self.now
            c = t + self._us(50, 300)
            c = self._db(tid, sid, svc, proc.main, c, 2, False) + self._us(20, 100)
            mend = c + self._ms(20, 180)
            self._emit(
                (
                    tid,
                    self._id(),
                    sid,
                    "POST",
                    CLIENT,
                    c,
                    mend,
                    FLAGS_LOCAL,
                    (
                        ("http.request.method", "POST"),
                        ("server.address", "api.sendgrid.com"),
                        ("url.full", "https://api.sendgrid.com/v3/mail/send"),
                        ("http.response.status_code", 202),
                    ),
                    (),
                    (),
                    0,
                    "",
                    proc.main,
                    SCOPE_HTTP,
                ),
                False,
                2,
            )
            r: Rec = (
                tid,
                sid,
                0,
                "orders process",
                CONSUMER,
                t,
                mend + self._us(30, 300),
                FLAGS_LOCAL,
                (
                    ("messaging.system", "rabbitmq"),
                    ("messaging.destination.name", "orders"),
                    ("messaging.operation.type", "process"),
                    ("messaging.message.id", _uuid(rng)),
                ),
                (),
                (Link(prod[0], prod[1], (("messaging.operation.type", "send"),)),),
                0,
                "",
                proc.main,
                SCOPE_MSG,
            )
            self._emit(r, True, 1)
            self._root(r)
            return
        assert isinstance(arg, Process)
        proc = arg
        svc = proc.service
        units = [proc.main, *(c.main for c in proc.children)]
        if kind == "healthz":
            unit = proc.servers[rng.randrange(len(proc.servers))]
            r = (
                self._new_trace(),
                self._id(),
                0,
                "GET /healthz",
                SERVER,
                self.now,
                self.now + self._us(80, 900),
                FLAGS_LOCAL,
                (
                    ("http.request.method", "GET"),
                    ("url.path", "/healthz"),
                    ("http.route", "/healthz"),
                    ("http.response.status_code", 200),
                    ("user_agent.original", "kube-probe/1.31"),
                ),
                (),
                (),
                0,
                "",
                unit,
                SCOPE_HTTP,
            )
            self._emit(r, False, 1)
            self._root(r)
            self._timer(self.now + self._ms(9_900, 10_100), "healthz", proc)
            return
        for unit in units if kind == "startup" else [proc.main]:
            tid, sid = self._new_trace(), self._id()
            t = self.now + self._us(10, 200)
            name = "startup" if kind == "startup" else svc.periodic
            if svc.db:
                t = self._db(tid, sid, svc, unit, t, 2, False) + self._us(10, 100)
            step_end = t + self._ms(1, 40)
            self._emit(
                (
                    tid,
                    self._id(),
                    sid,
                    "load config" if kind == "startup" else "compute",
                    INTERNAL,
                    t,
                    step_end,
                    FLAGS_LOCAL,
                    (("app.step", name),),
                    (),
                    (),
                    0,
                    "",
                    unit,
                    SCOPE_APP,
                ),
                False,
                2,
            )
            r = (
                tid,
                sid,
                0,
                name,
                INTERNAL,
                self.now,
                step_end + self._us(10, 100),
                FLAGS_LOCAL,
                (("app.job", name), ("app.scheduled", kind == "periodic")),
                (),
                (),
                0,
                "",
                unit,
                SCOPE_APP,
            )
            self._emit(r, False, 1)
            self._root(r)
        if kind == "periodic":
            self._timer(self.now + int(svc.period_s * 1e9), "periodic", proc)

    def _commit(self, budget: int) -> bool:
        """Keep the event's records if they fit in ``budget`` spans; False (and drop them) if not."""
        cur, later = self._cur, self._cur_later
        n = len(cur) + len(later)
        ok = n <= budget
        if ok:
            self._events += 1
            self._pending.extend(cur)
            if later:
                # The worker's SDK exports on its own schedule: a few events later.
                self._seq += 1
                heapq.heappush(self._later, (self._events + self.rng.randrange(2, 40), self._seq, later))
            st = self.stats
            st.spans += n
            st.traces += self._cur_traces
            for k, v in self._cur_stats.items():
                setattr(st, k, getattr(st, k) + v)
            if n:
                st.depth[self._cur_depth] = st.depth.get(self._cur_depth, 0) + 1
            self.truth.extend(self._cur_truth)
        self._cur, self._cur_later, self._cur_truth, self._cur_stats = [], [], [], {}
        self._cur_traces = self._cur_depth = 0
        return ok

    def _release(self, everything: bool = False) -> None:
        while self._later and (everything or self._later[0][0] <= self._events):
            self._pending.extend(heapq.heappop(self._later)[2])

    def lines(self, n_spans: int) -> Iterator[list[Rec]]:
        """Exactly ``n_spans`` records, in lines of ``SPANS_PER_LINE``."""
        rng = self.rng
        mean_gap = 1e9 / TRACES_PER_SECOND
        filling = False
        while True:
            budget = n_spans - self.stats.spans
            if budget <= 0:
                break
            self.now += int(rng.expovariate(1.0) * mean_gap)
            while self._timers and self._timers[0][0] <= self.now:
                _, _, kind, arg = heapq.heappop(self._timers)
                self.now = max(self.now, _)
                self._background(kind, arg)
                self._commit(n_spans - self.stats.spans)
            budget = n_spans - self.stats.spans
            if budget <= 0:
                break
            if not filling:
                self._request()
                filling = not self._commit(budget)
            else:
                # The last few spans: single-span health checks make the count exact.
                proc = self.topo.processes[rng.randrange(len(self.topo.processes))]
                self._background("healthz", proc)
                self._commit(budget)
            self._release()
            while len(self._pending) >= SPANS_PER_LINE:
                yield self._take()
        self._release(everything=True)
        while self._pending:
            yield self._take()

    def _take(self) -> list[Rec]:
        line, self._pending = self._pending[:SPANS_PER_LINE], self._pending[SPANS_PER_LINE:]
        self.stats.lines += 1
        return line


SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
_SCHEMA_J = f',"schemaUrl":"{SCHEMA_URL}"}}'
_SCHEMA_P = ld(b"\x1a", SCHEMA_URL.encode())


def encode_line(recs: list[Rec]) -> tuple[bytes, bytes]:
    """One ``ExportTraceServiceRequest`` as (OTLP/JSON line without newline, protobuf bytes):
    spans grouped by resource, then by scope, in order of first appearance, as the Collector's
    batch processor groups them."""
    groups: dict[int, tuple[Resource, dict[int, list[Rec]]]] = {}
    for r in recs:
        res = r[13].resource
        g = groups.get(res.index)
        if g is None:
            g = groups[res.index] = (res, {})
        g[1].setdefault(r[14], []).append(r)
    jrs: list[str] = []
    prs: list[bytes] = []
    for res, scopes in groups.values():
        jss: list[str] = []
        pss: list[bytes] = []
        for scope_kind, spans in scopes.items():
            scope = res.scopes[scope_kind]
            encs = [encode_span(r) for r in spans]
            jss.append('{"scope":' + scope.json + ',"spans":[' + ",".join([e[0] for e in encs]) + "]}")
            pss.append(ld(b"\x12", scope.proto + b"".join([ld(b"\x12", e[1]) for e in encs])))
        jrs.append('{"resource":' + res.json + ',"scopeSpans":[' + ",".join(jss) + "]" + _SCHEMA_J)
        prs.append(ld(b"\x0a", res.proto + b"".join(pss) + _SCHEMA_P))
    return ('{"resourceSpans":[' + ",".join(jrs) + "]}").encode(), b"".join(prs)


# ---------------------------------------------------------------------------------------------
# Files and the cache.
# ---------------------------------------------------------------------------------------------

#: The Collector file exporter's default rotation size (``rotation.max_megabytes: 100``).
ROTATE_BYTES = 100 * 1024 * 1024


def generator_version() -> str:
    """Changes whenever this file does, so a cached dump is never stale."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]


def _rotated_name(last_end_ns: int) -> str:
    """``data-2022-09-14T05-02-14.173.json``: the Collector's (lumberjack's) backup name."""
    ts = dt.datetime.fromtimestamp(last_end_ns / 1e9, tz=dt.timezone.utc)
    return f"data-{ts:%Y-%m-%dT%H-%M-%S}.{ts.microsecond // 1000:03d}.json"


@dataclass
class Written:
    json_files: list[Path]
    proto_file: Path | None
    stats: Stats
    json_bytes: int
    proto_bytes: int


def write_dump(
    out_dir: Path,
    n_spans: int,
    seed: int = DEFAULT_SEED,
    *,
    proto: bool = True,
    rotate_bytes: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Written:
    """Write ``dump.json`` (and ``dump.pb``), or with ``rotate_bytes`` a series of rotated JSON
    files named as the Collector names them; ``truth.jsonl`` lists the orphans, legitimate roots
    and spans with missing parents."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = Generator(seed)
    json_files: list[Path] = []
    active = out_dir / ("data.json" if rotate_bytes else "dump.json")
    jf = active.open("wb")
    pf = (out_dir / "dump.pb").open("wb") if proto else None
    tf = (out_dir / "truth.jsonl").open("w")
    json_bytes = proto_bytes = cur_bytes = 0
    pack_len = struct.Struct(">I").pack
    try:
        for recs in gen.lines(n_spans):
            if gen.truth:
                tf.write("".join(t + "\n" for t in gen.truth))
                gen.truth.clear()
            j, p = encode_line(recs)
            if rotate_bytes and cur_bytes and cur_bytes + len(j) + 1 > rotate_bytes:
                jf.close()
                rotated = out_dir / _rotated_name(max(r[6] for r in recs))
                active.rename(rotated)
                json_files.append(rotated)
                jf = active.open("wb")
                cur_bytes = 0
            jf.write(j + b"\n")
            cur_bytes += len(j) + 1
            json_bytes += len(j) + 1
            if pf is not None:
                pf.write(pack_len(len(p)) + p)
                proto_bytes += 4 + len(p)
            if progress is not None:
                progress(gen.stats.spans)
        tf.write("".join(t + "\n" for t in gen.truth))
    finally:
        jf.close()
        tf.close()
        if pf is not None:
            pf.close()
    json_files.append(active)
    return Written(json_files, out_dir / "dump.pb" if proto else None, gen.stats, json_bytes, proto_bytes)


def iter_lines(n_spans: int, seed: int = DEFAULT_SEED) -> Iterator[tuple[bytes, bytes]]:
    """The encoded lines without touching disk (the smoke test and the listen load generator)."""
    gen = Generator(seed)
    for recs in gen.lines(n_spans):
        yield encode_line(recs)
