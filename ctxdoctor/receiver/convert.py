"""The journal -> OTLP/JSON converter, run as a child process of the receiver.

Why a journal and a second process: encoding OTLP/JSON in Python costs several µs per span even
straight from the wire bytes (``encode.Transcoder``), several times what it costs to parse and
check a request. Doing it before the acknowledgement would cap the receiver at a fraction of what
it can accept. So a request is acknowledged once its (checked) protobuf bytes are appended to the
journal, which is the Collector file exporter's ``proto`` format (4-byte big-endian length +
``ExportTraceServiceRequest``), readable by ``ctxdoctor analyze`` as it is, and this process turns
the journal into the JSON dump behind it, in order, on another core and at a lower priority than
the receiver. At shutdown the receiver waits for it to finish and then deletes the journal; if
anything goes wrong the journal is kept, since it holds every acknowledged request.

A large backlog left when the receiver stops (or pauses) is converted by worker processes, a
chunk of records each, written to the dump in journal order. Not while requests keep coming: then
the cores are busy receiving, and the copying between processes would cost more of what little
is left than a second process gains (``bench/encode.py`` measures both).

The converter also computes the figures of the live view that need the spans themselves: the
number of traces, and the suspected orphans (the real diagnosis, over the most recent spans, at
most once a second). They come from the trace ids the transcoder finds, as records are converted;
when the dump falls behind, records are read ahead of it for these figures (parsed once more, ~0.8
µs a span against ~5 to convert), so the view shows what arrived rather than what was converted.

Protocol with the parent: it reads commands on stdin (``end <offset>``: convert up to there,
then exit; end of input: the parent is gone, so convert what the journal holds and exit) and
writes one JSON ``Progress`` per line on stdout. Arguments: journal, dump, then ``--append``,
``--no-live``, ``--workers=N`` (default: one per core, at most 4; 0: none).

When the dump is the journal itself (``listen -o dump.pb``, the Collector's ``proto`` format) there
is nothing to convert: the dump argument is ``-`` and this process only observes, counting the
traces and running the live diagnosis. It still parses each record in full (~0.8 µs a span
against ~5 to convert it), so that it judges a record as the converter would.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import multiprocessing
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import msgspec
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ctxdoctor.findings import Settings
from ctxdoctor.receiver.encode import TranscodeError, Transcoder
from ctxdoctor.receiver.sink import AppendFile, DumpWriteError

#: The live diagnosis covers at most this many of the most recent spans.
LIVE_WINDOW_SPANS = 50_000
#: ... and at most this many bytes of requests: a few requests with huge attribute values must not
#: pin hundreds of MB for a convenience figure. A single request larger than this is left out.
LIVE_WINDOW_BYTES = 16 << 20
#: Distinct trace ids are counted exactly up to this many, then estimated (HyperLogLog).
EXACT_TRACES = 200_000
_HEADER = struct.Struct(">I")
#: Journal bytes per chunk handed to a worker process: ~6k spans, tens of ms of work.
CHUNK_BYTES = 2 << 20
#: The backlog from which worker processes pay for their start (~0.3 s each) and the copying.
PARALLEL_BACKLOG = 16 << 20
#: The journal has not grown for this long: the receiver is idle, its cores are free.
IDLE_SECONDS = 1.0
#: Workers start only if this many cores are idle. On 2 busy cores, 2 workers and the copying
#: between processes converted 115k spans/s where this process alone did 150k.
MIN_IDLE_CORES = 1.5
#: Seconds one ``step`` may take before it returns, so that progress is reported while a long
#: backlog drains.
STEP_BUDGET = 0.2
#: From this many journal bytes not yet in the live figures (~10k spans), they are read ahead of
#: the conversion. Below it the conversion keeps up, and the figures come at no extra cost.
OBSERVE_AHEAD_BYTES = 4 << 20


class Progress(msgspec.Struct, omit_defaults=True):
    offset: int = 0  # journal bytes converted
    requests: int = 0
    spans: int = 0  # converted
    observed_spans: int = 0  # in the live figures (traces, orphans): converted or read ahead
    traces: int = 0
    traces_estimated: bool = False
    orphans: int | None = None  # suspected orphans in the diagnosed spans
    orphans_spans: int = 0  # how many (most recent) spans that diagnosis covered
    orphans_time: float = 0.0  # Unix time of that diagnosis
    error: str | None = None  # the dump cannot be written (retrying)
    done: bool = False


class TraceCounter:
    """Distinct trace ids: exact while small, then a HyperLogLog estimate (error ~1%) so that
    memory stays flat however long the receiver runs. Ids are added a request at a time, as
    bytes: a few hundred per request, so the per-id cost is what counts."""

    _P = 14
    _M = 1 << _P

    def __init__(self) -> None:
        self._exact: set[bytes] | None = set()
        self._regs = bytearray(self._M)

    def add(self, trace_ids: Iterable[bytes]) -> None:
        if self._exact is not None:
            self._exact.update(trace_ids)
            if len(self._exact) > EXACT_TRACES:
                self._hll_all(self._exact)
                self._exact = None
            return
        # A request repeats each trace id for each of its spans (~6 to 1 in a 512-span batch):
        # the set drops the repeats in C before the per-id Python below.
        self._hll_all(set(trace_ids))

    def _hll_all(self, trace_ids: Iterable[bytes]) -> None:
        # hash() of bytes is SipHash, keyed per process: well mixed even for sequential ids, and
        # the counter never leaves this process. ~4x faster than mixing the int in Python.
        regs = self._regs
        mask, p, m1 = 0xFFFFFFFFFFFFFFFF, self._P, self._M - 1
        for t in trace_ids:
            h = hash(t) & mask
            rest = h >> p
            rank = 51 - rest.bit_length() if rest else 51  # leading zeros in 50 bits, plus one
            idx = h & m1
            if rank > regs[idx]:
                regs[idx] = rank

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


def _unreadable(offset: int) -> str:
    return f"journal record at offset {offset} is unreadable; skipped"


#: One record's result in a worker: (dump line, spans, trace ids), or why it is unreadable.
RecordResult = tuple[bytes, int, list[bytes]] | str
_worker_transcoder: Transcoder | None = None


def _trace_ids(body: bytes) -> list[bytes] | None:
    """Every span's trace id, or None if upb refuses the record (as the transcoder would)."""
    try:
        req = ExportTraceServiceRequest.FromString(body)
    except DecodeError:
        return None
    return [s.trace_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def convert_chunk(journal: str, start: int, offsets: list[int], end: int) -> list[RecordResult]:
    """Transcode the records at ``offsets`` (from ``start`` to ``end``), in a worker process."""
    global _worker_transcoder
    tc = _worker_transcoder = _worker_transcoder or Transcoder()  # its caches outlive the chunk
    fd = os.open(journal, os.O_RDONLY)
    try:
        data = os.pread(fd, end - start, start)
    finally:
        os.close(fd)
    out: list[RecordResult] = []
    for offset in offsets:
        p = offset - start
        (length,) = _HEADER.unpack_from(data, p)
        try:
            enc = tc.transcode(data[p + 4 : p + 4 + length])
        except TranscodeError:
            out.append(_unreadable(offset))
            continue
        out.append((enc.line, enc.spans, enc.trace_ids))
    return out


def _worker_start(parent: int) -> None:
    """A worker must not outlive the converter. If the receiver kills it (stuck on a full disk),
    a worker would wait forever to send its result: the other workers hold the pipe open."""
    with contextlib.suppress(Exception):  # Linux: SIGKILL this process when its parent dies
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that
        os._exit(0)
    from ctxdoctor.receiver.heap import return_large_blocks

    return_large_blocks()


class _Chunk(NamedTuple):
    start: int
    offsets: list[int]  # of its records
    end: int
    future: Future[list[RecordResult]]


def default_workers() -> int:
    """One worker per core: they run at idle priority, so they take only what is free."""
    return min(os.cpu_count() or 1, 4)


def idle_cores(sample: float = 0.1) -> float | None:
    """How many cores nothing used over the next ``sample`` seconds (Linux); None if unknown."""

    def times() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]  # user nice system idle iowait ...
        return sum(ticks), ticks[3] + ticks[4]

    try:
        total0, idle0 = times()
        time.sleep(sample)
        total1, idle1 = times()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (idle1 - idle0) / (total1 - total0)


class Converter:
    """Converts complete journal records to dump lines, in order, never skipping one."""

    def __init__(
        self,
        journal: Path,
        dump: Path | None,
        *,
        append: bool = False,
        live: bool = True,
        settings: Settings | None = None,
        workers: int = 0,
        parallel_backlog: int = PARALLEL_BACKLOG,
        chunk_bytes: int = CHUNK_BYTES,
        min_idle_cores: float = MIN_IDLE_CORES,
    ) -> None:
        """``workers``: processes that convert a backlog of ``parallel_backlog`` bytes or more
        once the receiver stops or pauses, if ``min_idle_cores`` are idle (0: this process does
        it all). ``dump`` None: observe only (the journal is the dump)."""
        self.journal_path = journal
        self._journal = journal.open("rb")
        self.dump = AppendFile(dump, append=append, exclusive=True) if dump is not None else None
        if self.dump is None:
            workers = 0  # nothing to convert
        self.progress = Progress()
        self._traces = TraceCounter()
        self._live = live
        self._settings = settings
        self._recent: collections.deque[tuple[int, bytes]] = collections.deque()
        self._recent_spans = 0
        self._recent_bytes = 0
        self._next_diagnosis = time.monotonic() + 0.5
        self._lock = threading.Lock()
        self._transcoder = Transcoder()
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._inflight: collections.deque[_Chunk] = collections.deque()
        self._scheduled = 0  # journal offset up to which chunks are in flight
        self._parallel_backlog = parallel_backlog
        self._chunk_bytes = chunk_bytes
        self._min_idle_cores = min_idle_cores
        self._next_idle_check = 0.0
        #: Whether worker processes converted part of the journal.
        self.used_workers = False
        #: Journal offset up to which records are in the live figures (at or past ``progress.offset``).
        self.observed = 0
        #: Offsets of the records skipped as unreadable, the first few (and how many in all).
        self.unreadable: list[int] = []
        self.unreadable_count = 0
        self._size = -1
        self._grew_at = time.monotonic()

    def step(self, limit: int | None = None, budget: float = STEP_BUDGET) -> bool:
        """Convert the complete records available (up to ``limit``), for about ``budget``
        seconds at most; True if any was converted."""
        # Only what the file holds now: a record past its end is still being written (or is
        # about to be rolled back), and a device (a test's /dev/full) has no records at all.
        size = os.fstat(self._journal.fileno()).st_size
        end = size if limit is None else min(size, limit)
        now = time.monotonic()
        if size != self._size:
            self._size, self._grew_at = size, now
        # ``limit`` is set once the receiver has stopped accepting.
        quiet = limit is not None or now - self._grew_at >= IDLE_SECONDS
        parallel = (
            self._workers
            and quiet
            and end - self.progress.offset >= self._parallel_backlog
            and (self._inflight or self._cores_free(now))
        )
        deadline = now + budget
        unobserved = end - max(self.observed, self.progress.offset)
        if self.dump is not None and self._live and unobserved >= OBSERVE_AHEAD_BYTES:
            self._observe_ahead(end, now + budget / 2)
        did = False
        while True:
            progressed = self._step_parallel(end) if self._inflight or parallel else self._step_one(end)
            if not progressed:
                return did
            did = True
            if time.monotonic() >= deadline:
                return did

    def _cores_free(self, now: float) -> bool:
        """Whether other processes leave cores for the workers: when they do not, the workers
        and the copying between processes make converting slower than this process alone."""
        if self._pool is not None or not self._min_idle_cores:
            return True
        if now < self._next_idle_check:
            return False
        self._next_idle_check = now + 5.0
        idle = idle_cores()
        return idle is None or idle >= self._min_idle_cores

    def _record_at(self, offset: int, end: int) -> int | None:
        """The length of the complete record at ``offset``, if it ends by ``end``."""
        if offset + 4 > end:
            return None
        header = os.pread(self._journal.fileno(), 4, offset)
        if len(header) < 4:
            return None
        (length,) = _HEADER.unpack(header)
        return length if offset + 4 + length <= end else None

    def _skipped(self, offset: int) -> None:
        self.progress.error = _unreadable(offset)
        self.unreadable_count += 1
        if len(self.unreadable) < 10:
            self.unreadable.append(offset)

    def _body_at(self, offset: int, end: int) -> bytes | None:
        """The body of the complete record at ``offset``, if it ends by ``end``."""
        length = self._record_at(offset, end)
        if length is None:
            return None
        body = os.pread(self._journal.fileno(), length, offset + 4)
        return body if len(body) == length else None

    def _step_one(self, end: int) -> bool:
        offset = self.progress.offset
        body = self._body_at(offset, end)
        if body is None:
            return False
        after = offset + 4 + len(body)
        if self.dump is None:  # the journal is the dump: only observe
            ids = _trace_ids(body)
            if ids is None:
                self._skipped(offset)
                self.progress.offset = self.observed = after
                return True
            spans = len(ids)
        else:
            try:
                enc = self._transcoder.transcode(body)
            except TranscodeError:
                # Cannot happen for records the receiver wrote; do not stop converting over it.
                self._skipped(offset)
                self.progress.offset = after
                self.observed = max(self.observed, after)
                return True
            if enc.line:
                self.dump.append(enc.line)  # raises DumpWriteError: the caller retries
            ids, spans = enc.trace_ids, enc.spans
        if offset >= self.observed:  # not read ahead already
            self._observe(ids, body, spans)
            self.observed = after
        self.progress.offset = after
        self.progress.requests += 1
        self.progress.spans += spans
        return True

    def _observe_ahead(self, end: int, deadline: float) -> None:
        """Put records the conversion has not reached into the live figures (see the module)."""
        pos = max(self.observed, self.progress.offset)
        while pos < end and time.monotonic() < deadline:
            body = self._body_at(pos, end)
            if body is None:
                break
            ids = _trace_ids(body)
            if ids is not None:  # else the conversion reports it when it gets there
                self._observe(ids, body, len(ids))
            pos += 4 + len(body)
        self.observed = pos

    def _step_parallel(self, end: int) -> bool:
        """Write the oldest chunk in flight once its worker is done, keeping the workers busy."""
        try:
            self._schedule(end)
            if not self._inflight:
                return False
            chunk = self._inflight[0]
            results = chunk.future.result()
        except Exception:
            # A worker died (killed, out of memory) or failed: convert here, from where the dump is.
            self._stop_pool()
            self._workers = 0
            return True
        lines = b"".join(r[0] for r in results if not isinstance(r, str))
        assert self.dump is not None  # no workers without a dump
        if lines:
            self.dump.append(lines)  # raises DumpWriteError: the caller retries this chunk
        self._inflight.popleft()
        fresh = chunk.end > self.observed  # any record not read ahead already
        data = os.pread(self._journal.fileno(), chunk.end - chunk.start, chunk.start) if self._live and fresh else b""
        for offset, r in zip(chunk.offsets, results, strict=True):
            if isinstance(r, str):
                self._skipped(offset)
                continue
            _, spans, trace_ids = r
            if offset >= self.observed:
                p = offset - chunk.start
                body = data[p + 4 : p + 4 + _HEADER.unpack_from(data, p)[0]] if data else b""
                self._observe(trace_ids, body, spans)
            self.progress.requests += 1
            self.progress.spans += spans
        self.progress.offset = chunk.end
        self.observed = max(self.observed, chunk.end)
        return True

    def _schedule(self, end: int) -> None:
        if not self._inflight:
            self._scheduled = self.progress.offset
        pos = self._scheduled
        while len(self._inflight) < 2 * self._workers:
            start = pos
            offsets = []
            while pos - start < self._chunk_bytes and (length := self._record_at(pos, end)) is not None:
                offsets.append(pos)
                pos += 4 + length
            if not offsets:
                break
            if self._pool is None:
                # Spawned, not forked: this process has threads. They inherit its idle priority.
                ctx = multiprocessing.get_context("spawn")
                self.used_workers = True
                self._pool = ProcessPoolExecutor(
                    self._workers, mp_context=ctx, initializer=_worker_start, initargs=(os.getpid(),)
                )
            future = self._pool.submit(convert_chunk, str(self.journal_path), start, offsets, pos)
            self._inflight.append(_Chunk(start, offsets, pos, future))
        self._scheduled = pos

    def _stop_pool(self) -> None:
        self._inflight.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _observe(self, trace_ids: list[bytes], body: bytes, spans: int) -> None:
        self.progress.observed_spans += spans
        self._traces.add(trace_ids)
        self.progress.traces = self._traces.count()
        self.progress.traces_estimated = self._traces.estimated
        if self._live and spans and len(body) <= LIVE_WINDOW_BYTES:
            self._recent.append((spans, body))
            self._recent_spans += spans
            self._recent_bytes += len(body)
            while self._recent and (
                self._recent_spans - self._recent[0][0] >= LIVE_WINDOW_SPANS or self._recent_bytes > LIVE_WINDOW_BYTES
            ):
                n, old = self._recent.popleft()
                self._recent_spans -= n
                self._recent_bytes -= len(old)

    def maybe_diagnose(self, force: bool = False) -> None:
        """The live orphan count, at most once a second and at most a fifth of the time."""
        now = time.monotonic()
        if not self._live or not self._recent_spans or (not force and now < self._next_diagnosis):
            return
        if self._recent_spans == self.progress.orphans_spans and self.progress.orphans is not None:
            self._next_diagnosis = now + 1.0
            return
        from ctxdoctor.analysis import analyze_dump
        from ctxdoctor.model import Span
        from ctxdoctor.readers import Dump, reads_values
        from ctxdoctor.readers.otlp_proto_spans import request_spans
        from ctxdoctor.units import UnitTable

        spans: list[Span] = []
        units = UnitTable()
        # The attribute values as ``analyze_paths`` reads them for a dump of this size.
        asked = self._settings.attribute_values if self._settings is not None else None
        seen_values: dict[str, str] | None = {} if reads_values(asked, self._recent_bytes) else None
        for _, body in self._recent:
            request_spans(body, units, spans.append, None, seen_values)
        window = Dump(spans, [], [], values=seen_values is not None)
        try:
            orphans: int | None = analyze_dump(window, self._settings).summary.suspected_orphans
        except Exception:  # a convenience figure; the final report is the result
            orphans = None
        took = time.monotonic() - now
        self.progress.orphans = orphans
        self.progress.orphans_spans = len(spans)
        self.progress.orphans_time = time.time()
        self._next_diagnosis = time.monotonic() + max(1.0, 5 * took)

    def close(self) -> None:
        self._stop_pool()
        self._journal.close()
        if self.dump is not None:
            self.dump.close()


class FileConverted(msgspec.Struct, frozen=True):
    requests: int
    spans: int
    truncated: int | None = None  # offset of a last record cut short (the writer was stopped)


def convert_file(source: Path, target: Path, workers: int | None = None) -> FileConverted:
    """A dump in the Collector's proto format (or a receiver journal) to OTLP/JSON lines, exactly
    as the receiver writes them. Raises ``InputError`` (naming the offset) for a file that is not
    in that format or has unreadable records; the lines of every readable record are written
    first, so nothing readable is lost. ``UsageError`` when the output cannot be written."""
    from ctxdoctor.errors import InputError, UsageError
    from ctxdoctor.readers.otlp_proto import MAX_RECORD, OtlpProtoReader

    if not source.is_file():
        raise InputError(source, "no such file" if not source.exists() else "not a regular file")
    with source.open("rb") as f:
        head = f.read(64)
    if head[:2] == b"\x1f\x8b":
        raise InputError(source, "is gzip-compressed; decompress it first (gunzip -k)")
    if head and not OtlpProtoReader().sniff(head):
        what = "it is already OTLP/JSON" if head.lstrip()[:1] == b"{" else "the first length prefix is not plausible"
        raise InputError(
            source,
            f"not the Collector file exporter's proto format (4-byte big-endian length + request): {what}",
            offset=0,
        )
    size = source.stat().st_size
    try:
        conv = Converter(source, target, live=False, workers=default_workers() if workers is None else workers)
    except DumpWriteError as exc:
        raise UsageError(str(exc)) from None
    try:
        while conv.step(limit=size, budget=1.0):
            pass
    except DumpWriteError as exc:  # the output holds whole lines: the failed one was rolled back
        raise UsageError(f"{exc}; the first {conv.progress.requests} requests were written") from None
    finally:
        conv.close()
    p = conv.progress
    if conv.unreadable:
        more = f" (and {conv.unreadable_count - 1} more)" if conv.unreadable_count > 1 else ""
        raise InputError(
            source,
            f"record is not a valid ExportTraceServiceRequest{more}; skipped, and the {p.requests} "
            f"readable requests written to {target}",
            offset=conv.unreadable[0],
        )
    truncated = None
    if p.offset < size:
        with source.open("rb") as f:
            f.seek(p.offset)
            header = f.read(4)
        length = _HEADER.unpack(header)[0] if len(header) == 4 else 0
        if length > MAX_RECORD:
            raise InputError(
                source,
                f"record length {length} is not plausible; the {p.requests} requests before it were written "
                f"to {target}",
                offset=p.offset,
            )
        truncated = p.offset
    return FileConverted(requests=p.requests, spans=p.spans, truncated=truncated)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    journal, dump = Path(args[0]), (None if args[1] == "-" else Path(args[1]))
    append = "--append" in args
    live = "--no-live" not in args
    workers = next((int(a.split("=", 1)[1]) for a in args if a.startswith("--workers=")), default_workers())
    settings = next(
        (msgspec.json.decode(a.split("=", 1)[1], type=Settings) for a in args if a.startswith("--settings=")), None
    )
    # Ctrl-C reaches the whole process group; the parent decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ctxdoctor.receiver.heap import return_large_blocks

    return_large_blocks()
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
        conv = Converter(journal, dump, append=append, live=live, workers=workers, settings=settings)
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
