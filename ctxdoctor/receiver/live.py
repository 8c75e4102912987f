"""When ``ctxdoctor listen`` shows its live figures (what they say is ``render.status``).

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
from rich.console import Console
from rich.live import Live

from ctxdoctor.receiver.receiver import Receiver
from ctxdoctor.render.status import HINT_BACKLOG_BYTES, draining, live_line, live_panel


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
                live_panel(self.state.snapshot(), self.title),
                console=self.console,
                refresh_per_second=4,
                transient=False,
            )
            self._live.__enter__()
        return self

    def tick(self) -> None:
        snap = self.state.snapshot()
        if self._live is not None:
            self._live.update(live_panel(snap, self.title))
            return
        now = time.monotonic()
        key = (snap.spans, snap.requests, snap.orphans, snap.failed, snap.write_error, snap.connections)
        if now - self._last_plain >= self._plain_every and key != self._last_line_key:
            self.console.print(live_line(snap), highlight=False, markup=False, soft_wrap=True)
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
            hint = not self._hinted and left >= HINT_BACKLOG_BYTES
            self._hinted = self._hinted or hint
            self.console.print(draining(left, hint=hint), highlight=False, markup=False)
            self._last_drain = now

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(live_panel(self.state.snapshot(), self.title))
            self._live.__exit__(None, None, None)
            self._live = None
            return
        snap = self.state.snapshot()
        key = (snap.spans, snap.requests, snap.orphans, snap.failed, snap.write_error, snap.connections)
        if key != self._last_line_key:
            self.console.print(live_line(snap), highlight=False, markup=False, soft_wrap=True)
