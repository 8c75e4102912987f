"""``ctxdoctor listen``: receive spans from running apps, then diagnose what arrived.

The CLI module only parses options and calls ``listen``; everything about running the receiver
(signals, the live view, the final report) lives here so it can be tested without typer.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import NamedTuple

from rich.console import Console

from ctxdoctor.exitcodes import ExitCode
from ctxdoctor.findings import Settings
from ctxdoctor.receiver.grpc_server import PortInUse
from ctxdoctor.receiver.live import LiveState, LiveView
from ctxdoctor.receiver.receiver import Receiver, dump_format_for
from ctxdoctor.receiver.sink import DumpWriteError


def _url_host(host: str) -> str:
    """The host apps should connect to: a wildcard bind is reachable as localhost."""
    if host in ("0.0.0.0", "", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host else host


def env_hints(host: str, grpc_port: int, http_port: int) -> list[tuple[str, str]]:
    """(who, shell line) pairs telling apps where to export."""
    h = _url_host(host)
    return [
        (
            "Node.js (http/protobuf, the SDK default)",
            f"export OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf "
            f"OTEL_EXPORTER_OTLP_ENDPOINT=http://{h}:{http_port}",
        ),
        (
            "Python (gRPC, the SDK default)",
            f"export OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_PROTOCOL=grpc "
            f"OTEL_EXPORTER_OTLP_ENDPOINT=http://{h}:{grpc_port}",
        ),
    ]


def listen(
    *,
    host: str = "127.0.0.1",
    port: int = 4317,
    http_port: int = 4318,
    output: Path = Path("dump.json"),
    duration: float | None = None,
    max_spans: int | None = None,
    max_message_mib: float = 64.0,
    dump_format: str | None = None,
    settings: Settings | None = None,
    jobs: int = 0,
    junit: Path | None = None,
    json_path: Path | None = None,
    force: bool = False,
    console: Console,
    err: Console,
) -> ExitCode:
    """Run the receiver until a signal, ``duration`` or ``max_spans``; then print the report."""
    for name, value in (("--port", port), ("--http-port", http_port)):
        if not 0 <= value <= 65535:
            err.print(f"error: {name} {value} is not a TCP port (0-65535)", markup=False, highlight=False)
            return ExitCode.USAGE
    if port == http_port and port != 0:
        err.print(
            f"error: --port and --http-port are both {port}; OTLP/gRPC and OTLP/HTTP need separate ports",
            markup=False,
            highlight=False,
        )
        return ExitCode.USAGE
    if max_message_mib <= 0:
        err.print("error: --max-message-mib must be positive", markup=False, highlight=False)
        return ExitCode.USAGE

    def log(message: str) -> None:
        err.print(f"listen: {message}", markup=False, highlight=False, soft_wrap=True)

    receiver = Receiver(
        output=output,
        dump_format=dump_format_for(output, dump_format),
        host=host,
        grpc_port=port,
        http_port=http_port,
        max_message_bytes=int(max_message_mib * (1 << 20)),
        max_spans=max_spans,
        log=log,
        live=True,
        settings=settings,
        overwrite=force,
    )
    try:
        receiver.start()
    except (PortInUse, DumpWriteError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return ExitCode.USAGE

    stop = threading.Event()
    reason = ["stopped"]
    write_errors_reported = [0]

    def on_write_error(message: str) -> None:
        # Loud, but once per burst: exporters retry, so one failure repeats many times a second.
        write_errors_reported[0] += 1
        n = write_errors_reported[0]
        if n in (1, 10, 100, 1000) or n % 10000 == 0:
            log(f"ERROR {message}; exporters are answered UNAVAILABLE and will retry (failure #{n})")

    receiver.on_write_error(on_write_error)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            # A second interrupt while shutting down: leave now. The dump holds complete lines only.
            os._exit(130)
        reason[0] = signal.Signals(signum).name
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert receiver.grpc_port is not None and receiver.http_port is not None
        console.print(
            f"ctxdoctor listen: OTLP/gRPC on {host}:{receiver.grpc_port}, OTLP/HTTP on "
            f"{host}:{receiver.http_port} (POST /v1/traces), writing {output}"
            + (" (Collector proto format)" if receiver.dump_format == "proto" else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        console.print("Point your apps here (exporters default to localhost:4317/4318 already):", highlight=False)
        for who, line in env_hints(host, receiver.grpc_port, receiver.http_port):
            console.print(f"  {who}:", highlight=False, markup=False)
            console.print(f"    {line}", highlight=False, markup=False, soft_wrap=True)
        stop_conditions = []
        if duration is not None:
            stop_conditions.append(f"after {duration:g}s")
        if max_spans is not None:
            stop_conditions.append(f"after {max_spans} spans")
        stop_conditions.append("on Ctrl-C/SIGTERM")
        console.print(f"Stops {', '.join(stop_conditions)}, then prints the diagnosis.", highlight=False)

        state = LiveState(receiver)
        deadline = None if duration is None else time.monotonic() + duration
        with LiveView(state, console, title=f"ctxdoctor listen -> {output}") as view:
            while not stop.is_set():
                if receiver.limit_reached.is_set():
                    reason[0] = f"--max-spans {max_spans} reached"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    reason[0] = f"--duration {duration:g}s elapsed"
                    break
                stop.wait(0.25)
                view.tick()
            stop.set()
            receiver.stop(progress=lambda p, size: view.draining(p.offset, size))
    finally:
        receiver.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    report_to = _ReportTo(settings or Settings(), jobs, junit, json_path)
    return _finish(receiver, output, reason[0], console, err, report_to)


class _ReportTo(NamedTuple):
    """What the final report is computed with, and the report files it also goes to."""

    settings: Settings
    jobs: int
    junit: Path | None
    json_path: Path | None


def _finish(
    receiver: Receiver, output: Path, reason: str, console: Console, err: Console, report_to: _ReportTo
) -> ExitCode:
    st = receiver.stats
    wrote = output if receiver.dump_complete else receiver.result_path
    console.print(
        f"\nStopped ({reason}). Received {st.spans} spans in {st.requests} requests; wrote {wrote}"
        + (f" and {receiver.receipts_path.name}" if receiver.receipts_path else "")
        + ".",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if st.rejected_spans or st.failed_requests:
        console.print(
            f"Rejected {st.rejected_spans} spans (invalid ids, answered with partial_success); "
            f"{st.failed_requests} requests answered with an error (see the receipts).",
            highlight=False,
            markup=False,
        )
    conns = st.connections_per_service()
    sdks = st.resources_per_service()
    if conns:
        console.print("Exporter connections per service (each SDK instance opens its own):", highlight=False)
        for svc, n in conns.items():
            console.print(
                f"  {svc}: {n} connection{'s' if n != 1 else ''}, {sdks.get(svc, 0)} SDK instance"
                f"{'s' if sdks.get(svc, 0) != 1 else ''} (distinct resources)",
                highlight=False,
                markup=False,
            )
    if st.spans == 0:
        console.print(
            "No spans arrived. Check that the app exports OTLP (OTEL_TRACES_EXPORTER=otlp) "
            "to the ports above; "
            "an OTLP/HTTP exporter aimed at the gRPC port fails with a parse error such as 'BadStatusLine' "
            "or 'Parse Error: Expected HTTP/' in the app's log.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return ExitCode.OK
    from ctxdoctor.analysis import analyze_paths
    from ctxdoctor.errors import InputError
    from ctxdoctor.render import get_renderer
    from ctxdoctor.render.ci import publish

    path = receiver.result_path
    try:
        # This process has run a gRPC server: a dump big enough to read in parallel is read in a
        # fresh interpreter (see ctxdoctor.analysis).
        report = analyze_paths([path], report_to.settings, jobs=report_to.jobs, fresh_process=True)
    except InputError as exc:
        err.print(f"error: cannot read back the dump: {exc}", markup=False, highlight=False)
        return ExitCode.BAD_INPUT
    console.print()
    get_renderer("terminal").render(report, console)
    publish(report, junit=report_to.junit, json_path=report_to.json_path, summary_heading="ctxdoctor listen")
    return ExitCode.OK
