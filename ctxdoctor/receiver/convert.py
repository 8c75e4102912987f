"""The journal -> OTLP/JSON converter, run as a child process of the receiver.

Why a journal and a second process: encoding OTLP/JSON in Python costs several µs per span even
straight from the wire bytes (``encode.Transcoder``), several times what it costs to parse and
check a request. Doing it before the acknowledgement would cap the receiver at a fraction of what
it can accept. So a request is acknowledged once
its (checked) protobuf bytes are appended to the journal, which is the Collector file exporter's
``proto`` format (4-byte big-endian length + ``ExportTraceServiceRequest``), readable by
``ctxdoctor analyze`` as it is, and this process turns the journal into the JSON dump behind it,
in order, on another core and at a lower priority than the receiver. At shutdown the receiver
waits for it to finish and then deletes the journal; if anything goes wrong the journal is kept,
since it holds every acknowledged request.

The converter also computes the figures of the live view that need the spans themselves: the
number of traces, and the suspected orphans (the real diagnosis, over the most recent spans, at
most once a second).

Protocol with the parent: it reads commands on stdin (``end <offset>``: convert up to there,
then exit; end of input: the parent is gone, so convert what the journal holds and exit) and
writes one JSON ``Progress`` per line on stdout.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from ctxdoctor.receiver.encode import TranscodeError, Transcoder
from ctxdoctor.receiver.sink import AppendFile, DumpWriteError

#: The live diagnosis covers at most this many of the most recent spans.
LIVE_WINDOW_SPANS = 50_000
#: Distinct trace ids are counted exactly up to this many, then estimated (HyperLogLog).
EXACT_TRACES = 200_000
_HEADER = struct.Struct(">I")


class Progress(msgspec.Struct, omit_defaults=True):
    offset: int = 0  # journal bytes converted
    requests: int = 0
    spans: int = 0
    traces: int = 0
    traces_estimated: bool = False
    orphans: int | None = None  # suspected orphans in the diagnosed spans
    orphans_spans: int = 0  # how many (most recent) spans that diagnosis covered
    orphans_time: float = 0.0  # Unix time of that diagnosis
    error: str | None = None  # the dump cannot be written (retrying)
    done: bool = False


class TraceCounter:
    """Distinct trace ids: exact while small, then a HyperLogLog estimate (error ~1%) so that
    memory stays flat however long the receiver runs."""

    _P = 14
    _M = 1 << _P

    def __init__(self) -> None:
        self._exact: set[int] | None = set()
        self._regs = bytearray(self._M)

    def add(self, trace_id: int) -> None:
        if self._exact is not None:
            self._exact.add(trace_id)
            if len(self._exact) > EXACT_TRACES:
                for t in self._exact:
                    self._hll(t)
                self._exact = None
            return
        self._hll(trace_id)

    def _hll(self, trace_id: int) -> None:
        # Trace ids are meant to be random, but mix anyway: some generators are sequential.
        mask = 0xFFFFFFFFFFFFFFFF
        h = (trace_id ^ (trace_id >> 64)) & mask
        h = ((h ^ (h >> 33)) * 0xFF51AFD7ED558CCD) & mask  # murmur3's 64-bit finaliser
        h = ((h ^ (h >> 33)) * 0xC4CEB9FE1A85EC53) & mask
        h ^= h >> 33
        idx = h & (self._M - 1)
        rest = h >> self._P
        rank = 51 - rest.bit_length() if rest else 51  # leading zeros in 50 bits, plus one
        if rank > self._regs[idx]:
            self._regs[idx] = rank

    @property
    def estimated(self) -> bool:
        return self._exact is None

    def count(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        m = self._M
        z = sum(2.0**-r for r in self._regs)
        est = 0.7213 / (1 + 1.079 / m) * m * m / z
        return round(est)


class Converter:
    """Converts complete journal records to dump lines, in order, never skipping one."""

    def __init__(self, journal: Path, dump: Path, *, append: bool = False, live: bool = True) -> None:
        self.journal_path = journal
        self._journal = journal.open("rb")
        self.dump = AppendFile(dump, append=append, exclusive=True)
        self.progress = Progress()
        self._traces = TraceCounter()
        self._live = live
        self._recent: collections.deque[tuple[int, bytes]] = collections.deque()
        self._recent_spans = 0
        self._next_diagnosis = time.monotonic() + 0.5
        self._lock = threading.Lock()
        self._transcoder = Transcoder()

    def step(self, limit: int | None = None) -> bool:
        """Convert the complete records available (up to ``limit``); True if any was converted."""
        did = False
        f = self._journal
        # Only what the file holds now: a record past its end is still being written (or is
        # about to be rolled back), and a device (a test's /dev/full) has no records at all.
        size = os.fstat(f.fileno()).st_size
        while (limit is None or self.progress.offset < limit) and self.progress.offset + 4 <= size:
            f.seek(self.progress.offset)
            (length,) = _HEADER.unpack(f.read(4))
            if self.progress.offset + 4 + length > size:
                break
            body = f.read(length)
            if len(body) < length:
                break
            try:
                enc = self._transcoder.transcode(body)
            except TranscodeError:
                # Cannot happen for records the receiver wrote; do not stop converting over it.
                self.progress.error = f"journal record at offset {self.progress.offset} is unreadable; skipped"
                self.progress.offset += 4 + length
                continue
            if enc.line:
                self.dump.append(enc.line)  # raises DumpWriteError: the caller retries
            self._observe(enc.trace_ids, body, enc.spans)
            self.progress.offset += 4 + length
            self.progress.requests += 1
            self.progress.spans += enc.spans
            did = True
        return did

    def _observe(self, trace_ids: list[bytes], body: bytes, spans: int) -> None:
        add = self._traces.add
        from_bytes = int.from_bytes
        for t in trace_ids:
            add(from_bytes(t, "big"))
        self.progress.traces = self._traces.count()
        self.progress.traces_estimated = self._traces.estimated
        if self._live and spans:
            self._recent.append((spans, body))
            self._recent_spans += spans
            while self._recent and self._recent_spans - self._recent[0][0] >= LIVE_WINDOW_SPANS:
                n, _ = self._recent.popleft()
                self._recent_spans -= n

    def maybe_diagnose(self, force: bool = False) -> None:
        """The live orphan count, at most once a second and at most a fifth of the time."""
        now = time.monotonic()
        if not self._live or not self._recent_spans or (not force and now < self._next_diagnosis):
            return
        if self._recent_spans == self.progress.orphans_spans and self.progress.orphans is not None:
            self._next_diagnosis = now + 1.0
            return
        from ctxdoctor.diagnose import diagnose
        from ctxdoctor.model import Span
        from ctxdoctor.readers.otlp_proto import request_spans
        from ctxdoctor.units import UnitTable

        spans: list[Span] = []
        units = UnitTable()
        for _, body in self._recent:
            request_spans(body, units, spans.append)
        try:
            orphans: int | None = diagnose(spans).summary.suspected_orphans
        except Exception:  # a convenience figure; the final report is the result
            orphans = None
        took = time.monotonic() - now
        self.progress.orphans = orphans
        self.progress.orphans_spans = len(spans)
        self.progress.orphans_time = time.time()
        self._next_diagnosis = time.monotonic() + max(1.0, 5 * took)

    def close(self) -> None:
        self._journal.close()
        self.dump.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    journal, dump = Path(args[0]), Path(args[1])
    append = "--append" in args
    live = "--no-live" not in args
    # Ctrl-C reaches the whole process group; the parent decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Receiving comes first: the backlog is converted when a core is idle (Linux SCHED_IDLE),
    # or at least at a low priority, and all of it once the receiver stops accepting.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(10)
    out = sys.stdout.buffer
    encode = msgspec.json.Encoder().encode
    write_lock = threading.Lock()

    def report(p: Progress) -> None:
        with write_lock:
            try:
                out.write(encode(p) + b"\n")
                out.flush()
            except (BrokenPipeError, ValueError):
                pass

    try:
        conv = Converter(journal, dump, append=append, live=live)
    except (OSError, DumpWriteError) as exc:
        report(Progress(error=f"cannot start converting: {exc}", done=True))
        return 1

    end: list[int | None] = [None]
    parent_gone = threading.Event()
    wake = threading.Event()

    def commands() -> None:
        for line in sys.stdin:
            parts = line.split()
            if len(parts) == 2 and parts[0] == "end":
                end[0] = int(parts[1])
            wake.set()
        parent_gone.set()
        wake.set()

    threading.Thread(target=commands, daemon=True).start()
    run(conv, lambda: end[0], parent_gone, wake, report)
    return 0


def run(
    conv: Converter,
    end: Callable[[], int | None],
    parent_gone: threading.Event,
    wake: threading.Event,
    report: Callable[[Progress], None],
) -> None:
    last_report = 0.0
    reported_offset = -1
    while True:
        target = end()
        try:
            progressed = conv.step(limit=target)
            if conv.progress.error and conv.progress.error.startswith("cannot write"):
                conv.progress.error = None
        except DumpWriteError as exc:
            conv.progress.error = str(exc)
            progressed = False
            report(conv.progress)
            wake.wait(0.5)  # retry the same record: nothing acknowledged may be skipped
            wake.clear()
            continue
        finished = (target is not None and conv.progress.offset >= target) or (
            parent_gone.is_set() and not progressed and end() is None
        )
        if finished:
            break
        if not progressed:
            conv.maybe_diagnose()
        now = time.monotonic()
        if conv.progress.offset != reported_offset and (not progressed or now - last_report >= 0.1):
            report(conv.progress)
            reported_offset = conv.progress.offset
            last_report = now
        elif now - last_report >= 1.0:
            report(conv.progress)
            last_report = now
        if not progressed:
            wake.wait(0.02)
            wake.clear()
    conv.close()
    conv.progress.done = True
    report(conv.progress)
