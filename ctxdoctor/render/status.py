"""The words ``listen`` and ``run`` say while they work: where to export, the live figures, how a
run ended. Pure: figures in, text (or a rich renderable) out; the receiver and the runner decide
when to print, this module only what.

The lines are plain text printed with markup off, so a service or file name is never read as
rich markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from ctxdoctor.receiver.live import Snapshot

#: From this far behind, the live view says how to have a dump that keeps up.
HINT_BACKLOG_BYTES = 64 << 20
_MIB = 1 << 20


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


# -- listen: before ---------------------------------------------------------------------------------
def listen_banner(
    host: str, grpc_port: int, http_port: int, zipkin_port: int | None, zipkin_path: str, output: Path, *, proto: bool
) -> str:
    """Where ``listen`` receives and what it writes."""
    return (
        f"ctxdoctor listen: OTLP/gRPC on {host}:{grpc_port}, OTLP/HTTP on "
        f"{host}:{http_port} (POST /v1/traces), "
        + (f"Zipkin on {host}:{zipkin_port} (POST {zipkin_path}), " if zipkin_port else "")
        + f"writing {output}"
        + (" (Collector proto format)" if proto else "")
    )


POINT_YOUR_APPS = "Point your apps here (exporters default to localhost:4317/4318 already):"


def exporter_hints(
    url_host: str, grpc_port: int, http_port: int, zipkin_port: int | None, zipkin_path: str
) -> list[tuple[str, str]]:
    """(who, shell line) pairs telling apps where to export; ``url_host`` as in a URL."""
    hints = [
        (
            "Node.js (http/protobuf, the SDK default)",
            f"export OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf "
            f"OTEL_EXPORTER_OTLP_ENDPOINT=http://{url_host}:{http_port}",
        ),
        (
            "Python (gRPC, the SDK default)",
            f"export OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_PROTOCOL=grpc "
            f"OTEL_EXPORTER_OTLP_ENDPOINT=http://{url_host}:{grpc_port}",
        ),
    ]
    if zipkin_port:
        hints.append(
            (
                "apps on a Zipkin exporter",
                "export OTEL_TRACES_EXPORTER=zipkin "
                f"OTEL_EXPORTER_ZIPKIN_ENDPOINT=http://{url_host}:{zipkin_port}{zipkin_path}",
            )
        )
    return hints


def hint_lines(hints: list[tuple[str, str]]) -> list[str]:
    return [line for who, shell in hints for line in (f"  {who}:", f"    {shell}")]


def stops_when(duration: float | None, max_spans: int | None) -> str:
    conditions = []
    if duration is not None:
        conditions.append(f"after {duration:g}s")
    if max_spans is not None:
        conditions.append(f"after {max_spans} spans")
    conditions.append("on Ctrl-C/SIGTERM")
    return f"Stops {', '.join(conditions)}, then prints the diagnosis."


def zipkin_port_taken(port: int) -> str:
    return f"port {port} is taken, so Zipkin is not received; name a free one with --zipkin-port"


def write_error(message: str, n: int) -> str:
    return f"ERROR {message}; exporters are answered UNAVAILABLE and will retry (failure #{n})"


# -- listen: while it runs --------------------------------------------------------------------------
def _orphans_text(snap: Snapshot) -> str:
    if snap.orphans is None:
        return "-" if snap.spans == 0 else "computing…"
    text = str(snap.orphans)
    if snap.orphans_spans < snap.observed_spans:
        text += f" in the last {snap.orphans_spans} spans"
    age = snap.orphans_age or 0.0
    if age >= 2:
        text += f" (as of {age:.0f}s ago)"
    return text


def _traces_text(snap: Snapshot) -> str:
    return f"~{snap.traces}" if snap.traces_estimated else str(snap.traces)


def _backlog_text(snap: Snapshot) -> str | None:
    if snap.backlog_bytes < _MIB:
        return None
    text = f"JSON dump {snap.backlog_bytes / _MIB:.0f} MiB behind (all of it safe in the journal)"
    if snap.backlog_bytes >= HINT_BACKLOG_BYTES:
        text += "; a proto dump (-o dump.pb) keeps up at any rate"
    return text


def live_line(snap: Snapshot) -> str:
    """The live figures as one line, for logs and pipes."""
    services = ", ".join(f"{svc} ({c} conn)" for svc, (c, _sdk) in snap.services.items()) or "none yet"
    line = (
        f"[{snap.elapsed:6.1f}s] spans {snap.spans}  traces {_traces_text(snap)}  requests {snap.requests}  "
        f"connections {snap.connections}  suspected orphans {_orphans_text(snap)}  services: {services}"
    )
    if snap.rejected or snap.failed:
        line += f"  rejected spans {snap.rejected}  failed requests {snap.failed}"
    backlog = _backlog_text(snap)
    if backlog:
        line += f"  {backlog}"
    if snap.write_error:
        line += f"  NOT WRITABLE: {snap.write_error}"
    return line


def live_panel(snap: Snapshot, title: str) -> Any:
    """The live figures as a panel, for a terminal."""
    head = Table.grid(padding=(0, 3))
    for _ in range(5):
        head.add_column(justify="right")
    head.add_row("spans", "traces", "requests", "connections", "suspected orphans")
    head.add_row(
        Text(str(snap.spans), style="bold"),
        Text(_traces_text(snap), style="bold"),
        Text(str(snap.requests), style="bold"),
        Text(str(snap.connections), style="bold"),
        Text(_orphans_text(snap), style="bold yellow" if snap.orphans else "bold"),
    )
    parts: list[Any] = [
        Text(f"{title}  ({snap.elapsed:.0f}s, Ctrl-C to stop and diagnose)", style="dim"),
        head,
    ]
    if snap.services:
        svc = Table(show_header=True, header_style="dim", box=None, padding=(0, 2))
        svc.add_column("service")
        svc.add_column("connections", justify="right")
        svc.add_column("SDK instances", justify="right")
        for name, (c, sdk) in snap.services.items():
            svc.add_row(name, str(c), str(sdk))
        parts.append(svc)
    if snap.rejected or snap.failed:
        parts.append(Text(f"rejected spans {snap.rejected}, failed requests {snap.failed}", style="yellow"))
    backlog = _backlog_text(snap)
    if backlog:
        parts.append(Text(backlog, style="dim"))
    if snap.write_error:
        parts.append(Text(f"DUMP NOT WRITABLE: {snap.write_error} (exporters are told to retry)", style="bold red"))
    return Group(*parts)


def draining(left_bytes: int, *, hint: bool) -> str:
    """The JSON dump catching up after the receiver stopped accepting."""
    tail = " (a proto dump, -o dump.pb, is complete the moment the load stops)" if hint else ""
    return f"finishing the JSON dump: {left_bytes / _MIB:.0f} MiB of the journal left{tail}"


# -- listen: after ----------------------------------------------------------------------------------
def listen_stopped(reason: str, spans: int, requests: int, wrote: Path, receipts: str | None) -> str:
    return (
        f"\nStopped ({reason}). Received {spans} spans in {requests} requests; wrote {wrote}"
        + (f" and {receipts}" if receipts else "")
        + "."
    )


def refused(rejected_spans: int, failed_requests: int) -> str:
    return (
        f"Rejected {rejected_spans} spans (invalid ids, answered with partial_success); "
        f"{failed_requests} requests answered with an error (see the receipts)."
    )


def connections_per_service(conns: Mapping[str, int], sdks: Mapping[str, int]) -> list[str]:
    """Exporter connections and SDK instances per service (empty when none connected)."""
    if not conns:
        return []
    lines = ["Exporter connections per service (each SDK instance opens its own):"]
    for svc, n in conns.items():
        lines.append(
            f"  {svc}: {_plural(n, 'connection')}, {_plural(sdks.get(svc, 0), 'SDK instance')} (distinct resources)"
        )
    return lines


LISTEN_NO_SPANS = (
    "No spans arrived. Check that the app exports OTLP (OTEL_TRACES_EXPORTER=otlp) "
    "to the ports above; "
    "an OTLP/HTTP exporter aimed at the gRPC port fails with a parse error such as 'BadStatusLine' "
    "or 'Parse Error: Expected HTTP/' in the app's log."
)


# -- run --------------------------------------------------------------------------------------------
def run_banner(host: str, port: int, zipkin_port: int | None, output: Path) -> str:
    zipkin = f" and Zipkin on {host}:{zipkin_port}" if zipkin_port else ""
    return f"receiving OTLP/gRPC and OTLP/HTTP on {host}:{port}{zipkin}; writing {output}"


def env_set(name: str, value: str, *, replaced: bool) -> str:
    """One variable ``run`` sets in the command's environment."""
    return f"  {name}={value} (replaces the value you set)" if replaced else f"  {name}={value}"


def note(text: str) -> str:
    return f"note: {text}"


def probe_loaded(facts: Path) -> str:
    return f"probe: NODE_OPTIONS and PYTHONPATH load it in front of yours; facts: {facts} (--no-probe: off)"


def probe_off(facts: Path, why: str) -> str:
    return f"the probe is off: cannot write {facts}: {why}"


def command_ended(
    how: str, duration: float, spans: int, requests: int, connections: Mapping[str, int], output: Path
) -> str:
    """How the command ended and what it sent. ``how``: from ``command_how``."""
    via = ", ".join(f"{p}: {_plural(n, 'connection')}" for p, n in connections.items())
    return (
        f"the command {how} after {duration:.1f}s; received {spans} spans in {requests} "
        f"requests{f' ({via})' if via else ''}; dump: {output}"
    )


def command_how(killed_by: str | None, returncode: int, passed_on: list[str]) -> str:
    how = f"was killed by {killed_by}" if killed_by is not None else f"exited with code {returncode}"
    if passed_on:
        how += f" (after ctxdoctor passed on {', '.join(passed_on)})"
    return how


RUN_NO_SPANS = (
    "no spans arrived. Check that the command's SDK exports OTLP or Zipkin (OTEL_TRACES_EXPORTER unset, "
    "'otlp' or 'zipkin') "
    "and reads the standard environment; an exporter given an endpoint in code is not redirected."
)


def dump_incomplete(journal: Path) -> str:
    return f"the dump could not be completed; analysing the journal of every acknowledged request: {journal}"


def still_running(bound: float) -> str:
    return f"processes the command started are still running after {bound:g}s; analysing without them"


EXPORTS_STILL_ARRIVING = "exports were still arriving when the wait ended; the last ones may be missing"


def command_failed_note(program: str, returncode: int) -> str:
    """The CI summary's line (Markdown) for a command that failed."""
    return f"> The command `{program}` exited with code {returncode}; ctxdoctor run passes that code on."
