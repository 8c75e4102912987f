"""Benchmark ``ctxdoctor listen`` against parse-only sinks.

    .venv/bin/python bench/listen.py                       # gRPC and HTTP, 1/4/16 connections, 10 s each
    .venv/bin/python bench/listen.py --duration 3 --connections 4 --transports grpc   # a quick look
    .venv/bin/python bench/listen.py --bursts-only        # 200 connections at once, 16 gzip bombs, ...

For each transport and number of concurrent connections, runs the parse-only sink (the ceiling,
``bench/listen_sink.py``) and then ``ctxdoctor listen`` as child processes on free 127.0.0.1
ports, each under the same load generator (``bench/listen_load.py``, its own process, so it
never shares a GIL with the server): pre-serialized 512-span batches for a fixed duration.
Reports accepted spans/s, the ratio to the ceiling, the server's CPU seconds and peak RSS (of
its whole process tree, helper processes included), and checks that every acknowledged span is
in ctxdoctor's dump exactly once. ``ctxdoctor listen`` runs with its stdout on a
pseudo-terminal, as in a user's terminal, so its live view renders. Server ``ctxdoctor`` writes
the default OTLP/JSON dump (converted behind the receiver), ``ctxdoctor-pb`` a proto dump
(``-o dump.pb``: the journal is the dump).
With ``--bursts`` (or ``--bursts-only``) it also runs the bursts of ``bench/listen_bursts.py``:
200 connections at once, 16 concurrent gzip bombs, 16 distinct 20 MiB attribute values, each
with the peak memory of the receiver's whole process tree against its idle baseline.
Writes the figures to ``bench/out/listen-<date>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from bench.analyze import _num, machine, uptime
from bench.listen_load import SPANS_PER_BATCH, batch, batch_of, build_template

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "out"
DEFAULT_WORK = ROOT / "bench" / ".cache" / "listen"

TARGET_RATIO = 0.5  # ctxdoctor listen accepted spans/s / ceiling, at least
TARGET_RSS_BYTES = 300 * 1000 * 1000  # the server's peak RSS while receiving, below
#: "The final dump keeps up", read as: when the load stops, this much of the dump is written.
TARGET_DUMP_FRACTION = 0.9
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\r")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# A server under test, observed through /proc
# ---------------------------------------------------------------------------------------------


_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (a receiver may hand work to helper processes)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))) is not None:
            parent[int(d.name)] = int(st[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier]
        tree += frontier
    return tree


def _tree_cpu(root: int) -> float:
    """CPU seconds of the tree: utime + stime of the living, cutime + cstime of those reaped."""
    total = 0
    for pid in _tree(root):
        st = _stat(pid)
        if st is not None:
            total += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
    return total / _TICK


def _proc_mem(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


class Server:
    """A child process that prints its ports, then serves until SIGTERM."""

    def __init__(self, cmd: list[str], ready: re.Pattern[str], *, tty: bool) -> None:
        self.cmd = cmd
        self._ready_re = ready
        self.output: list[str] = []
        self._lock = threading.Lock()
        self.ports: tuple[int, int] | None = None
        self._ready = threading.Event()
        self.samples: list[tuple[float, int]] = []  # (time, RSS bytes of the process tree)
        self.hwm = 0  # the main process's own high-water mark
        self.helpers: set[int] = set()
        self.main_peak = self.helpers_peak = 0  # sampled peaks of the main process and its helpers
        env = dict(os.environ, COLUMNS="200", TERM="xterm-256color")
        if tty:
            master, slave = pty.openpty()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=ROOT, env=env, start_new_session=True
            )
            os.close(slave)
            self._fd = master
        else:
            r, w = os.pipe()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=w, stderr=w, cwd=ROOT, env=env, start_new_session=True
            )
            os.close(w)
            self._fd = r
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _read(self) -> None:
        buf = ""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError:
                break
            if not data:
                break
            text = data.decode(errors="replace")
            with self._lock:
                self.output.append(text)
            if not self._ready.is_set():
                buf += _ANSI.sub("", text)
                m = self._ready_re.search(buf)
                if m:
                    self.ports = (int(m.group(1)), int(m.group(2)))
                    self._ready.set()
        os.close(self._fd)

    def _sample(self) -> None:
        while self._sampling and self.proc.poll() is None:
            tree = _tree(self.proc.pid)
            self.helpers.update(tree[1:])
            main = helpers = 0
            for pid in tree:
                mem = _proc_mem(pid)
                if pid == self.proc.pid:
                    main = mem.get("VmRSS", 0)
                    self.hwm = max(self.hwm, mem.get("VmHWM", 0))
                else:
                    helpers += mem.get("VmRSS", 0)
            self.main_peak = max(self.main_peak, main)
            self.helpers_peak = max(self.helpers_peak, helpers)
            self.samples.append((time.monotonic(), main + helpers))
            time.sleep(0.1)

    def peak(self, until: float | None = None) -> int:
        """Peak RSS of the process tree (sampled every 0.1 s; at least the main process's own)."""
        sampled = max((r for t, r in self.samples if until is None or t <= until), default=0)
        return max(sampled, self.hwm if until is None else 0)

    def rss_now(self) -> int:
        return sum(_proc_mem(pid).get("VmRSS", 0) for pid in _tree(self.proc.pid))

    def wait_ready(self, timeout: float = 60.0) -> tuple[int, int]:
        if not self._ready.wait(timeout) or self.ports is None:
            self.kill()
            raise RuntimeError(f"server did not start: {' '.join(self.cmd)}\n{self.text()[-2000:]}")
        return self.ports

    def text(self) -> str:
        with self._lock:
            return _ANSI.sub("", "".join(self.output))

    def cpu(self) -> float:
        return _tree_cpu(self.proc.pid)

    def stop(self, timeout: float) -> tuple[int, float]:
        """SIGTERM, then wait; returns (exit code, seconds it took to exit)."""
        t0 = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = -9
        self._sampling = False
        self._reader.join(timeout=10)
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


# ---------------------------------------------------------------------------------------------
# Checking the dump
# ---------------------------------------------------------------------------------------------


class _S(msgspec.Struct):
    spanId: str = ""


class _SS(msgspec.Struct):
    spans: list[_S] = []


class _RS(msgspec.Struct):
    scopeSpans: list[_SS] = []


class _Req(msgspec.Struct):
    resourceSpans: list[_RS] = []


def _span_ids(dump: Path) -> Iterator[int]:
    """Every span id in the dump, in either format (read with msgspec or the reference classes,
    not with ctxdoctor's readers: this checks ctxdoctor)."""
    if dump.suffix == ".pb":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        data = dump.read_bytes()
        p = 0
        while p < len(data):
            n = int.from_bytes(data[p : p + 4], "big")
            req = ExportTraceServiceRequest.FromString(data[p + 4 : p + 4 + n])
            p += 4 + n
            for prs in req.resource_spans:
                for pss in prs.scope_spans:
                    for ps in pss.spans:
                        yield int.from_bytes(ps.span_id, "big")
        return
    decoder = msgspec.json.Decoder(_Req)
    with dump.open("rb") as fh:
        for line in fh:
            for rs in decoder.decode(line).resourceSpans:
                for ss in rs.scopeSpans:
                    for s in ss.spans:
                        yield int(s.spanId, 16)


def verify(dump: Path, load: dict[str, Any]) -> dict[str, Any]:
    """Every acknowledged span in the dump exactly once? Span ids name their batch and index."""
    sent = load["sent"]
    counts = bytearray((sent + 1) * SPANS_PER_BATCH)
    total = foreign = 0
    for span_id in _span_ids(dump):
        total += 1
        n, i = batch_of(span_id)
        if 1 <= n <= sent and i < SPANS_PER_BATCH:
            k = n * SPANS_PER_BATCH + i
            if counts[k] < 255:
                counts[k] += 1
        else:
            foreign += 1
    missing = duplicated = 0
    for n in load["acked"]:
        seg = counts[n * SPANS_PER_BATCH : (n + 1) * SPANS_PER_BATCH]
        zeros = seg.count(0)
        missing += zeros
        duplicated += sum(seg) - (SPANS_PER_BATCH - zeros)
    acked = set(load["acked"])
    unacked_written = sum(
        SPANS_PER_BATCH - counts[n * SPANS_PER_BATCH : (n + 1) * SPANS_PER_BATCH].count(0)
        for n in range(1, sent + 1)
        if n not in acked
    )
    return {
        "spans_in_dump": total,
        "acked_spans": len(load["acked"]) * SPANS_PER_BATCH,
        "acked_missing": missing,
        "acked_duplicated": duplicated,
        "unacked_but_written": unacked_written,
        "foreign_spans": foreign,
        "exactly_once": missing == 0 and duplicated == 0 and foreign == 0,
    }


_FRAME = re.compile(
    r"spans\s+traces\s+requests\s+connections\s+suspected orphans\s*\n[\s│|]*~?(\d+)\s+~?(\d+)\s+~?(\d+)\s+~?(\d+)"
)


def live_frame(text: str) -> dict[str, int] | None:
    """The last frame of the live view: what it showed for spans, traces and requests."""
    frames = list(_FRAME.finditer(text))
    if not frames:
        return None
    m = frames[-1]
    return {"spans": int(m.group(1)), "traces": int(m.group(2)), "requests": int(m.group(3))}


# ---------------------------------------------------------------------------------------------
# One measurement
# ---------------------------------------------------------------------------------------------


def run_one(
    kind: str,
    transport: str,
    connections: int,
    duration: float,
    seed: int,
    work: Path,
    tty: bool,
    keep_dumps: bool,
    traces_per_batch: int,
) -> dict[str, Any]:
    tag = f"{kind}-{transport}-{connections}"
    dump = work / f"{tag}.{'pb' if kind == 'ctxdoctor-pb' else 'json'}"
    if kind == "ceiling":
        flag = "--grpc-port" if transport == "grpc" else "--http-port"
        cmd = [sys.executable, "-m", "bench.listen_sink", flag, "0"]
        server = Server(cmd, re.compile(r"READY grpc=(\d+) http=(\d+)"), tty=False)
    else:
        cmd = [
            sys.executable,
            "-m",
            "ctxdoctor",
            "listen",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--http-port",
            "0",
            "--output",
            str(dump),
        ]
        server = Server(cmd, re.compile(r"OTLP/gRPC on [^ ]+:(\d+), OTLP/HTTP on [^ ]+:(\d+)"), tty=tty)
    res: dict[str, Any] = {"server": kind, "transport": transport, "connections": connections, "cmd": cmd}
    try:
        grpc_port, http_port = server.wait_ready()
        port = grpc_port if transport == "grpc" else http_port
        time.sleep(0.3)  # let the server settle (imports, threads) before the clock starts
        res["load_before"] = os.getloadavg()[0]
        rss_start = server.rss_now()
        cpu0 = server.cpu()
        t0 = time.monotonic()
        out = work / f"{tag}.load.json"
        loadgen = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.listen_load",
                "--transport",
                transport,
                "--port",
                str(port),
                "--connections",
                str(connections),
                "--duration",
                str(duration),
                "--seed",
                str(seed),
                "--out",
                str(out),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=duration + 180,
        )
        t_end = time.monotonic()
        window = t_end - t0
        cpu1 = server.cpu()
        frame = live_frame(server.text()) if kind != "ceiling" and tty else None
        dump_at_end = dump.stat().st_size if dump.exists() else 0
        res["rss_start_bytes"] = rss_start
        res["rss_end_bytes"] = server.rss_now()
        res["peak_rss_bytes"] = max(server.peak(until=t_end), res["rss_end_bytes"])  # while receiving
        res["cpu_s"] = cpu1 - cpu0
        res["window_s"] = window
        if loadgen.returncode != 0:
            raise RuntimeError(f"load generator failed: {loadgen.stderr[-2000:]}")
        load = json.loads(out.read_text())
        out.unlink()
        res["load"] = {k: v for k, v in load.items() if k not in ("acked", "failed", "partial")}
        res["acked_spans"] = load["acked_spans"]
        res["failed_batches"] = len(load["failed"])
        res["partial_batches"] = len(load["partial"])
        res["spans_per_s"] = load["acked_spans"] / load["duration_s"]
        # Flat memory means this stays near zero however long the run: spans go to disk. Measured
        # from a quarter into the load, so that start-up (helper processes, first allocations)
        # does not count as growth.
        quarter = [r for t, r in server.samples if t >= t0 + window / 4]
        res["rss_quarter_bytes"] = quarter[0] if quarter else None
        later_spans = load["acked_spans"] * 0.75
        res["rss_growth_mb_per_million_spans"] = (
            (res["rss_end_bytes"] - quarter[0]) / 1e6 / (later_spans / 1e6) if quarter and later_spans else None
        )
        res["cpu_util"] = res["cpu_s"] / window
        if frame is not None:
            res["live_view_at_end"] = frame
            res["live_view_traces_expected"] = len(load["acked"]) * traces_per_batch
        rc, stop_s = server.stop(timeout=1800)
        res["exit_code"] = rc
        res["shutdown_s"] = stop_s  # includes ctxdoctor's final diagnosis of the whole dump
        res["peak_rss_incl_shutdown_bytes"] = server.peak()
        res["helper_processes"] = len(server.helpers)
        res["peak_rss_main_bytes"] = server.main_peak
        res["peak_rss_helpers_bytes"] = server.helpers_peak
        rs = [r for _, r in server.samples]
        res["rss_samples_mb"] = [round(r / 1e6, 1) for r in rs[:: max(len(rs) // 40, 1)]]
        if kind == "ceiling":
            tail = [ln for ln in server.text().splitlines() if ln.startswith("{")]
            res["sink"] = json.loads(tail[-1]) if tail else None
        else:
            res["verify"] = verify(dump, load)
            res["dump_bytes"] = dump.stat().st_size
            # How far the dump had got when the load stopped: 1.0 means it kept up.
            res["dump_fraction_at_end_of_load"] = dump_at_end / res["dump_bytes"] if res["dump_bytes"] else None
            res["output_tail"] = server.text()[-1500:]
    finally:
        if server.proc.poll() is None:
            server.kill()
        if not keep_dumps:
            for p in work.glob(f"{tag}.*"):
                p.unlink()
    return res


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e6:.0f}"


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: servers killed, dumps removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per measurement")
    ap.add_argument("--connections", default="1,4,16", help="comma-separated concurrent connections")
    ap.add_argument("--transports", default="grpc,http")
    ap.add_argument(
        "--servers",
        default="ceiling,ctxdoctor,ctxdoctor-pb",
        help="ceiling, ctxdoctor (JSON dump), ctxdoctor-pb (proto dump)",
    )
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--no-tty", action="store_true", help="run ctxdoctor listen without a terminal (no live view)")
    ap.add_argument("--keep-dumps", action="store_true")
    ap.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--bursts", action="store_true", help="also run the bursts (bench/listen_bursts.py)")
    ap.add_argument("--bursts-only", action="store_true", help="run only the bursts")
    args = ap.parse_args(argv)
    if args.bursts_only:
        args.bursts = True
        args.transports = ""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    conns = [int(c) for c in args.connections.split(",")]
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    servers = [s.strip() for s in args.servers.split(",")]
    if any(s.startswith("ctxdoctor") for s in servers):
        helped = subprocess.run(
            [sys.executable, "-m", "ctxdoctor", "listen", "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if helped.returncode != 0:
            log(f"NOTE: skipping ctxdoctor listen: `ctxdoctor listen --help` failed: {helped.stderr.strip()[-300:]}")
            servers = [s for s in servers if not s.startswith("ctxdoctor")]
    args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=args.work_dir))
    template = batch(build_template(args.seed), 1)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest.FromString(template)
    traces_per_batch = len({s.trace_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans})

    started = dt.datetime.now()
    doc: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.executable).name, "bench/listen.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(),
        "uptime_start": uptime(),
        "batch": {"spans": SPANS_PER_BATCH, "bytes": len(template), "traces": traces_per_batch},
        "runs": [],
    }
    log(f"load: {doc['uptime_start']}")
    exit_code = 0
    try:
        for transport in transports:
            for c in conns:
                for kind in servers:
                    log(f"[{transport} x{c}] {kind} for {args.duration:g} s ...")
                    try:
                        r = run_one(
                            kind,
                            transport,
                            c,
                            args.duration,
                            args.seed,
                            work,
                            not args.no_tty,
                            args.keep_dumps,
                            traces_per_batch,
                        )
                    except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as exc:
                        log(f"  FAILED: {exc}")
                        r = {"server": kind, "transport": transport, "connections": c, "error": str(exc)[-2000:]}
                        exit_code = 1
                    doc["runs"].append(r)
                    if "spans_per_s" in r:
                        log(
                            f"  {r['spans_per_s']:,.0f} spans/s, cpu {r['cpu_s']:.1f} s, "
                            f"peak RSS {r['peak_rss_bytes'] / 1e6:.0f} MB"
                            + (f", verify {r['verify']}" if "verify" in r else "")
                        )
        if args.bursts:
            from bench import listen_bursts

            doc["bursts"] = []
            for name in listen_bursts.BURSTS:
                log(f"[burst] {name} ...")
                try:
                    b = listen_bursts.run_burst(name, work, Server)
                except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as exc:
                    log(f"  FAILED: {exc}")
                    b = {"burst": name, "error": str(exc)[-2000:]}
                    exit_code = 1
                doc["bursts"].append(b)
    finally:
        if not args.keep_dumps:
            shutil.rmtree(work, ignore_errors=True)
    doc["uptime_end"] = uptime()
    report(doc)
    if args.bursts:
        from bench import listen_bursts

        listen_bursts.report(doc["bursts"])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"listen-{started:%Y-%m-%dT%H-%M-%S}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"figures written to {out}")
    return exit_code


def report(doc: dict[str, Any]) -> None:
    runs = doc["runs"]
    ceilings = {(r["transport"], r["connections"]): r for r in runs if r["server"] == "ceiling" and "spans_per_s" in r}
    print(f"\nbatches of {doc['batch']['spans']} spans ({doc['batch']['bytes']:,} bytes of protobuf)")
    hdr = (
        f"{'transport':<9} {'conns':>5} {'server':<12} {'spans/s':>9} {'ratio':>6} {'cpu s':>6} {'cpu %':>6} "
        f"{'RSS MB':>7} {'(1/4':>6} {'end)':>5} {'MB/Mspan':>8} {'load':>5}  exactly-once / notes"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in runs:
        if "spans_per_s" not in r:
            print(f"{r['transport']:<9} {r['connections']:>5} {r['server']:<12} FAILED: {r.get('error', '')[:200]}")
            continue
        ceil = ceilings.get((r["transport"], r["connections"]))
        ratio = r["spans_per_s"] / ceil["spans_per_s"] if ceil and r["server"] != "ceiling" else None
        r["ratio_to_ceiling"] = ratio
        notes = []
        if "verify" in r:
            v = r["verify"]
            notes.append(
                "yes"
                if v["exactly_once"]
                else f"NO: {v['acked_missing']} missing, {v['acked_duplicated']} duplicated, "
                f"{v['foreign_spans']} foreign"
            )
            if v["unacked_but_written"]:
                notes.append(f"{v['unacked_but_written']} unacked spans written")
        if r["failed_batches"] or r["partial_batches"]:
            notes.append(
                f"{r['failed_batches']} failed / {r['partial_batches']} partial batches: {r['load']['errors']}"
            )
        if "live_view_at_end" in r:
            lv = r["live_view_at_end"]
            notes.append(
                f"live view: {lv['spans']:,} spans, {lv['traces']:,}/{r['live_view_traces_expected']:,} traces"
            )
        if r["server"] != "ceiling":
            frac = r.get("dump_fraction_at_end_of_load")
            if frac is not None:
                notes.append(f"dump {100 * frac:.0f}% written when the load stopped")
            notes.append(
                f"shutdown {r['shutdown_s']:.0f} s (peak {_mb(r['peak_rss_incl_shutdown_bytes'])} MB: main "
                f"{_mb(r['peak_rss_main_bytes'])}, helpers {_mb(r['peak_rss_helpers_bytes'])})"
            )
        print(
            f"{r['transport']:<9} {r['connections']:>5} {r['server']:<12} {r['spans_per_s']:>9,.0f} "
            f"{'-' if ratio is None else f'{ratio:.2f}':>6} {r['cpu_s']:>6.1f} {100 * r['cpu_util']:>5.0f}% "
            f"{_mb(r['peak_rss_bytes']):>7} {_mb(r.get('rss_quarter_bytes')):>6} {_mb(r['rss_end_bytes']):>5} "
            f"{_num(r.get('rss_growth_mb_per_million_spans'), '.0f'):>8} {r['load_before']:>5.2f}  {'; '.join(notes)}"
        )
    print("\ntargets (ctxdoctor listen):")
    for r in runs:
        if r["server"] == "ceiling" or "spans_per_s" not in r:
            continue
        ratio = r.get("ratio_to_ceiling")
        ok_ratio = ratio is not None and ratio >= TARGET_RATIO
        # Loss: an acknowledged span missing or doubled. A request answered with an error (or a
        # reset connection) is not acknowledged; an exporter retries it. Those are shown apart.
        ok_loss = r["verify"]["exactly_once"]
        ok_rss = r["peak_rss_bytes"] < TARGET_RSS_BYTES
        frac = r.get("dump_fraction_at_end_of_load")
        ok_dump = frac is not None and frac >= TARGET_DUMP_FRACTION
        r["targets"] = {"ratio": ok_ratio, "zero_loss": ok_loss, "rss": ok_rss, "dump_keeps_up": ok_dump}
        errors = r["failed_batches"] + r["partial_batches"]
        print(
            f"  {r['server']:<12} {r['transport']:<5} x{r['connections']:<3} >= 50% of ceiling: "
            f"{'PASS' if ok_ratio else 'FAIL'} ({'-' if ratio is None else f'{100 * ratio:.0f}%'}); "
            f"zero loss: {'PASS' if ok_loss else 'FAIL'}"
            + (f" ({errors} requests not acknowledged)" if errors else "")
            + f"; RSS < 300 MB while receiving: {'PASS' if ok_rss else 'FAIL'} ({_mb(r['peak_rss_bytes'])} MB)"
            f"; dump keeps up: {'PASS' if ok_dump else 'FAIL'} "
            f"({'-' if frac is None else f'{100 * frac:.0f}%'} written when the load stopped)"
        )
    print(f"\nload at start: {doc['uptime_start']}\nload at end:   {doc['uptime_end']}")


if __name__ == "__main__":
    sys.exit(main())
