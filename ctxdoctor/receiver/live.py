"""What ``ctxdoctor listen`` shows while it runs.

On a terminal: a rich ``Live`` panel refreshed four times a second. Otherwise (CI logs, pipes):
one plain line every few seconds, and only when something changed, so a log is not flooded.

"Suspected orphans so far" is the real diagnosis (``ctxdoctor.diagnose.diagnose``) over the
spans received so far, converted off the request path by a consumer thread. The diagnosis grows
with the number of spans, so it is recomputed at most once a second and backs off to five times
its own running time; the view says how old the figure is.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ctxdoctor.model import Span
from ctxdoctor.readers.otlp_proto import request_spans
from ctxdoctor.receiver.ingest import Batch
from ctxdoctor.receiver.receiver import Receiver
from ctxdoctor.units import UnitTable


class Snapshot:
    """The figures shown; computed by ``LiveState.snapshot``."""

    def __init__(
        self,
        *,
        spans: int,
        requests: int,
        traces: int,
        services: dict[str, tuple[int, int]],
        orphans: int | None,
        orphans_age: float | None,
        rejected: int,
        failed: int,
        write_error: str | None,
        elapsed: float,
    ) -> None:
        self.spans = spans
        self.requests = requests
        self.traces = traces
        self.services = services  # service -> (connections, SDK instances)
        self.orphans = orphans
        self.orphans_age = orphans_age
        self.rejected = rejected
        self.failed = failed
        self.write_error = write_error
        self.elapsed = elapsed

    @property
    def connections(self) -> int:
        return sum(c for c, _ in self.services.values())


class LiveState:
    """Consumes accepted requests into spans and keeps the running diagnosis."""

    def __init__(self, receiver: Receiver, *, diagnose_interval: float = 1.0) -> None:
        self.receiver = receiver
        self._queue = receiver.subscribe()
        self._units = UnitTable()
        self._spans: list[Span] = []
        self._traces: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._interval = diagnose_interval
        self._orphans: int | None = None
        self._orphans_at: float | None = None
        self._diagnosed_len = -1
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._consume, name="listen-live", daemon=True)

    def start(self) -> LiveState:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def release(self) -> None:
        """Drop the spans kept for the running diagnosis (the final report reads the dump)."""
        with self._lock:
            self._spans = []
            self._traces = set()

    def _consume(self) -> None:
        next_diag = time.monotonic() + self._interval
        while not self._stop.is_set():
            try:
                batch: Batch | None = self._queue.get(timeout=0.2)
            except queue.Empty:
                batch = None
            if batch is not None:
                got: list[Span] = []
                request_spans(batch[1], self._units, got.append)
                with self._lock:
                    self._spans.extend(got)
                    self._traces.update(s.trace_id for s in got)
                continue_draining = not self._queue.empty()
                if continue_draining and time.monotonic() < next_diag:
                    continue
            now = time.monotonic()
            if now >= next_diag:
                took = self._diagnose()
                next_diag = time.monotonic() + max(self._interval, 5 * took)

    def _diagnose(self) -> float:
        with self._lock:
            spans = self._spans
            n = len(spans)
        if n == self._diagnosed_len:
            return 0.0
        t0 = time.monotonic()
        try:
            from ctxdoctor.diagnose import diagnose

            report = diagnose(spans[:n])
            orphans: int | None = report.summary.suspected_orphans
        except Exception:  # the live figure is a convenience; the final report is the result
            orphans = None
        took = time.monotonic() - t0
        self._orphans = orphans
        self._orphans_at = time.monotonic()
        self._diagnosed_len = n
        return took

    def snapshot(self) -> Snapshot:
        st = self.receiver.stats
        conns = st.connections_per_service()
        sdks = st.resources_per_service()
        with self._lock:
            traces = len(self._traces)
        return Snapshot(
            spans=st.spans,
            requests=st.requests,
            traces=traces,
            services={svc: (conns.get(svc, 0), sdks.get(svc, 0)) for svc in sorted(set(conns) | set(sdks))},
            orphans=self._orphans,
            orphans_age=None if self._orphans_at is None else time.monotonic() - self._orphans_at,
            rejected=st.rejected_spans,
            failed=st.failed_requests,
            write_error=st.last_write_error,
            elapsed=time.monotonic() - self._started,
        )


def _orphans_text(snap: Snapshot) -> str:
    if snap.orphans is None:
        return "-" if snap.spans == 0 else "computing…"
    age = snap.orphans_age or 0.0
    return f"{snap.orphans}" + (f" (as of {age:.0f}s ago)" if age >= 2 else "")


def plain_line(snap: Snapshot) -> str:
    services = ", ".join(f"{svc} ({c} conn)" for svc, (c, _sdk) in snap.services.items()) or "none yet"
    line = (
        f"[{snap.elapsed:6.1f}s] spans {snap.spans}  traces {snap.traces}  requests {snap.requests}  "
        f"connections {snap.connections}  suspected orphans {_orphans_text(snap)}  services: {services}"
    )
    if snap.rejected or snap.failed:
        line += f"  rejected spans {snap.rejected}  failed requests {snap.failed}"
    if snap.write_error:
        line += f"  DUMP NOT WRITABLE: {snap.write_error}"
    return line


def panel(snap: Snapshot, title: str) -> Any:
    head = Table.grid(padding=(0, 3))
    for _ in range(5):
        head.add_column(justify="right")
    head.add_row("spans", "traces", "requests", "connections", "suspected orphans")
    head.add_row(
        Text(str(snap.spans), style="bold"),
        Text(str(snap.traces), style="bold"),
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
    if snap.write_error:
        parts.append(
            Text(f"DUMP NOT WRITABLE: {snap.write_error} (exporters are told to retry)", style="bold red")
        )
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

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(panel(self.state.snapshot(), self.title))
            self._live.__exit__(None, None, None)
            self._live = None
