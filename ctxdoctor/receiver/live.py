"""What ``ctxdoctor listen`` shows while it runs.

On a terminal: a rich ``Live`` panel refreshed four times a second. Otherwise (CI logs, pipes):
one plain line every few seconds, and only when something changed, so a log is not flooded.

"Suspected orphans so far" is the real diagnosis (``ctxdoctor.diagnose.diagnose``), run by the
converter process off the request path over the most recent spans (all of them up to 50,000),
at most once a second and backing off to five times its own running time; the view says which
spans it covers and how old it is. Traces are counted there too (estimated past 200,000).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ctxdoctor.receiver.receiver import Receiver


class Snapshot(msgspec.Struct, frozen=True):
    """The figures shown."""

    spans: int
    requests: int
    traces: int  # in the converted part
    traces_estimated: bool
    services: dict[str, tuple[int, int]]  # service -> (connections, SDK instances)
    orphans: int | None
    orphans_spans: int  # the (most recent) spans the orphan figure covers
    orphans_age: float | None
    observed_spans: int  # the spans the traces and orphans figures have seen
    backlog_bytes: int  # journal not yet in the JSON dump (0 for a proto dump: it is the journal)
    rejected: int
    failed: int
    write_error: str | None
    elapsed: float

    @property
    def connections(self) -> int:
        return sum(c for c, _ in self.services.values())


class LiveState:
    """Reads the receiver's counters and the converter's live figures into a ``Snapshot``."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self._started = time.monotonic()

    def snapshot(self) -> Snapshot:
        st = self.receiver.stats
        conv = self.receiver.conversion
        conns = st.connections_per_service()
        sdks = st.resources_per_service()
        backlog = self.receiver.dump_behind
        error = st.last_write_error or (conv.error if conv.error and "cannot write" in conv.error else None)
        return Snapshot(
            spans=st.spans,
            requests=st.requests,
            traces=conv.traces,
            traces_estimated=conv.traces_estimated,
            services={svc: (conns.get(svc, 0), sdks.get(svc, 0)) for svc in sorted(set(conns) | set(sdks))},
            orphans=conv.orphans,
            orphans_spans=conv.orphans_spans,
            orphans_age=None if not conv.orphans_time else max(0.0, time.time() - conv.orphans_time),
            observed_spans=conv.observed_spans,
            backlog_bytes=backlog,
            rejected=st.rejected_spans,
            failed=st.failed_requests,
            write_error=error,
            elapsed=time.monotonic() - self._started,
        )


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


#: From this far behind, the view says how to have a dump that keeps up.
HINT_BACKLOG_BYTES = 64 << 20


def _backlog_text(snap: Snapshot) -> str | None:
    if snap.backlog_bytes < 1 << 20:
        return None
    text = f"JSON dump {snap.backlog_bytes / (1 << 20):.0f} MiB behind (all of it safe in the journal)"
    if snap.backlog_bytes >= HINT_BACKLOG_BYTES:
        text += "; a proto dump (-o dump.pb) keeps up at any rate"
    return text


def plain_line(snap: Snapshot) -> str:
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


def panel(snap: Snapshot, title: str) -> Any:
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


class LiveView:
    """Drives the display from the main thread: call ``tick()`` a few times a second."""

    def __init__(self, state: LiveState, console: Console, *, title: str, plain_every: float = 5.0) -> None:
        self.state = state
        self.console = console
        self.title = title
        self.tty = console.is_terminal
        self._live: Live | None = None
        self._plain_every = plain_every
        self._last_plain = 0.0
        self._last_line_key: tuple[Any, ...] | None = None
        self._last_drain = 0.0
        self._hinted = False

    def __enter__(self) -> LiveView:
        if self.tty:
            self._live = Live(
                panel(self.state.snapshot(), self.title),
                console=self.console,
                refresh_per_second=4,
                transient=False,
            )
            self._live.__enter__()
        return self

    def tick(self) -> None:
        snap = self.state.snapshot()
        if self._live is not None:
            self._live.update(panel(snap, self.title))
            return
        now = time.monotonic()
        key = (snap.spans, snap.requests, snap.orphans, snap.failed, snap.write_error, snap.connections)
        if now - self._last_plain >= self._plain_every and key != self._last_line_key:
            self.console.print(plain_line(snap), highlight=False, markup=False, soft_wrap=True)
            self._last_plain = now
            self._last_line_key = key

    def draining(self, done: int, total: int) -> None:
        """Called while the dump catches up after the receiver stopped accepting."""
        now = time.monotonic()
        if self._live is not None:
            self.tick()
            return
        left = total - done
        if left >= 1 << 20 and now - self._last_drain >= 2.0:
            hint = ""
            if not self._hinted and left >= HINT_BACKLOG_BYTES:
                hint = " (a proto dump, -o dump.pb, is complete the moment the load stops)"
                self._hinted = True
            self.console.print(
                f"finishing the JSON dump: {left / (1 << 20):.0f} MiB of the journal left{hint}",
                highlight=False,
                markup=False,
            )
            self._last_drain = now

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(panel(self.state.snapshot(), self.title))
            self._live.__exit__(None, None, None)
            self._live = None
            return
        snap = self.state.snapshot()
        key = (snap.spans, snap.requests, snap.orphans, snap.failed, snap.write_error, snap.connections)
        if key != self._last_line_key:
            self.console.print(plain_line(snap), highlight=False, markup=False, soft_wrap=True)
