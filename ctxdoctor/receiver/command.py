"""``ctxdoctor listen``: receive spans from running apps, then diagnose what arrived.

The CLI module only parses options and calls ``listen``; everything about running the receiver
(signals, the live view, the final report) lives here so it can be tested without typer.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType
from typing import NamedTuple

from rich.console import Console

from ctxdoctor.errors import InputError, UsageError
from ctxdoctor.exitcodes import ExitCode
from ctxdoctor.findings import Settings
from ctxdoctor.receiver.grpc_server import PortInUse
from ctxdoctor.receiver.live import LiveState, LiveView
from ctxdoctor.receiver.receiver import Receiver, dump_format_for
from ctxdoctor.receiver.sink import DumpWriteError
from ctxdoctor.receiver.zipkin import DEFAULT_PORT as ZIPKIN_PORT
from ctxdoctor.receiver.zipkin import PATH as ZIPKIN_PATH
from ctxdoctor.render import status


def _url_host(host: str) -> str:
    """The host apps should connect to: a wildcard bind is reachable as localhost."""
    if host in ("0.0.0.0", "", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host else host


def zipkin_default_port(host: str) -> int | None:
    """Zipkin's port when nothing listens on it yet, else None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, ZIPKIN_PORT))
        except OSError:
            return None
    return ZIPKIN_PORT


def listen(
    *,
    host: str = "127.0.0.1",
    port: int = 4317,
    http_port: int = 4318,
    zipkin_port: int | None = None,
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
    """Run the receiver until a signal, ``duration`` or ``max_spans``; then print the report.

    ``zipkin_port`` None: Zipkin's own port, 9411, unless something already listens there (a
    Zipkin, a Collector), which is then said and left alone rather than failing the OTLP receiver.
    Raises ``UsageError`` (options, a busy port, a dump it may not replace) and ``InputError`` (a
    dump it cannot read back); the CLI maps them to exit codes.
    """
    zipkin_note = None
    if zipkin_port is None:
        zipkin_port = zipkin_default_port(host)
        if zipkin_port is None:
            zipkin_note = status.zipkin_port_taken(ZIPKIN_PORT)
    for name, value in (("--port", port), ("--http-port", http_port), ("--zipkin-port", zipkin_port or 0)):
        if not 0 <= value <= 65535:
            raise UsageError(f"{name} {value} is not a TCP port (0-65535)")
    if zipkin_port and zipkin_port in (port, http_port):
        raise UsageError(f"--zipkin-port {zipkin_port} is also an OTLP port")
    if port == http_port and port != 0:
        raise UsageError(f"--port and --http-port are both {port}; OTLP/gRPC and OTLP/HTTP need separate ports")
    if max_message_mib <= 0:
        raise UsageError("--max-message-mib must be positive")

    def log(message: str) -> None:
        _say(err, f"listen: {message}")

    def say(line: str) -> None:
        _say(console, line)

    receiver = Receiver(
        output=output,
        dump_format=dump_format_for(output, dump_format),
        host=host,
        grpc_port=port,
        http_port=http_port,
        zipkin_port=zipkin_port,
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
        raise UsageError(str(exc)) from None

    stop = threading.Event()
    reason = ["stopped"]
    write_errors_reported = [0]

    def on_write_error(message: str) -> None:
        # Loud, but once per burst: exporters retry, so one failure repeats many times a second.
        write_errors_reported[0] += 1
        n = write_errors_reported[0]
        if n in (1, 10, 100, 1000) or n % 10000 == 0:
            log(status.write_error(message, n))

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
        say(
            status.listen_banner(
                host,
                receiver.grpc_port,
                receiver.http_port,
                receiver.zipkin_port,
                ZIPKIN_PATH,
                output,
                proto=receiver.dump_format == "proto",
            )
        )
        say(status.POINT_YOUR_APPS)
        if zipkin_note is not None:
            log(zipkin_note)
        hints = status.exporter_hints(
            _url_host(host), receiver.grpc_port, receiver.http_port, receiver.zipkin_port, ZIPKIN_PATH
        )
        for line in status.hint_lines(hints):
            say(line)
        say(status.stops_when(duration, max_spans))

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
    return _finish(receiver, output, reason[0], console, report_to)


def _say(console: Console, line: str) -> None:
    """Print a line of ``render.status`` as it is: no markup, no highlighting, no wrapping."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


class _ReportTo(NamedTuple):
    """What the final report is computed with, and the report files it also goes to."""

    settings: Settings
    jobs: int
    junit: Path | None
    json_path: Path | None


def _finish(receiver: Receiver, output: Path, reason: str, console: Console, report_to: _ReportTo) -> ExitCode:
    st = receiver.stats
    wrote = output if receiver.dump_complete else receiver.result_path
    receipts = receiver.receipts_path.name if receiver.receipts_path else None
    _say(console, status.listen_stopped(reason, st.spans, st.requests, wrote, receipts))
    if st.rejected_spans or st.failed_requests:
        _say(console, status.refused(st.rejected_spans, st.failed_requests))
    for line in status.connections_per_service(st.connections_per_service(), st.resources_per_service()):
        _say(console, line)
    if st.spans == 0:
        _say(console, status.LISTEN_NO_SPANS)
        return ExitCode.OK
    from ctxdoctor.analysis import analyze_paths
    from ctxdoctor.render import get_renderer
    from ctxdoctor.render.ci import publish

    path = receiver.result_path
    try:
        # This process has run a gRPC server: a dump big enough to read in parallel is read in a
        # fresh interpreter (see ctxdoctor.analysis).
        report = analyze_paths([path], report_to.settings, jobs=report_to.jobs, fresh_process=True)
    except InputError as exc:
        # The receiver wrote it: this would be a bug, but say what broke.
        raise InputError(path, f"cannot read back the dump: {exc.message}") from None
    console.print()
    get_renderer("terminal").render(report, console)
    publish(report, junit=report_to.junit, json_path=report_to.json_path, summary_heading="ctxdoctor listen")
    return ExitCode.OK
