"""Reading big dumps with several processes: each decodes a contiguous share of the bytes.

Why processes: decoding is pure Python work per span (about 4 us each, most of ``analyze``'s
time), the GIL keeps threads from sharing it, and a Collector's dumps are many large files, or
one large file of independent lines (JSON) or length-prefixed records (proto) that can be cut
at a record boundary. The parent reads the first share itself while forked readers do the
rest; each sends back its spans pickled, with every ``Unit`` replaced by a reference into its
unit table, which the parent adopts into its own. The result is the same ``Dump``, span for
span and in the same order, as reading alone; positions in errors and warnings are those of
the whole file.

Only where ``os.fork`` exists (fork is what makes the readers cheap: no re-import, no
re-planning); elsewhere, and for small inputs, reading stays in one process.
"""

from __future__ import annotations

import functools
import io
import mmap
import os
import pickle
import struct
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from ctxdoctor.errors import InputError
from ctxdoctor.model import Span, Unit
from ctxdoctor.readers._workers import Forked
from ctxdoctor.readers.interface import PROGRESS_EVERY, Reader, ReadWarning, reporting
from ctxdoctor.units import UnitTable

#: Below this many bytes in all, one process reads everything: forking and merging cost more.
PARALLEL_MIN_BYTES = 32 << 20
#: Pickling the spans in a reader and unpickling them in the parent cost about a third of
#: decoding them, so the parent, which only unpickles, takes a larger share than each reader.
_HANDOFF_COST = 0.32


class Piece(msgspec.Struct, frozen=True):
    """Bytes ``[start, end)`` of one file (``end`` None: to its end), read by one process."""

    path: str
    start: int = 0
    end: int | None = None
    reader: int | None = None  # index into READERS when the file is cut; None: sniff it
    at_start: bool = True
    at_end: bool = True

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end is None


def shares(jobs: int) -> list[float]:
    """Each process's share of the bytes: the parent first, then the readers."""
    if jobs <= 1:
        return [1.0]
    parent = (1 + _HANDOFF_COST) / (jobs - 1 + 1 + _HANDOFF_COST)
    return [parent] + [(1 - parent) / (jobs - 1)] * (jobs - 1)


def plan(
    files: Sequence[Path], jobs: int, readers: Sequence[Reader], sniff: Callable[[Path], int | None]
) -> list[list[Piece]]:
    """Cut the files, taken as one run of bytes, into at most ``jobs`` runs of pieces, in order,
    of about the bytes given by ``shares``. A file is cut only where its format allows
    (``Reader.boundary``; ``sniff`` says which reader, or None for gzip and unknown files); a
    cut that falls in a file that cannot be cut moves to that file's nearer end."""
    sizes = [p.stat().st_size for p in files]
    total = sum(sizes)
    begins = [sum(sizes[:i]) for i in range(len(files))]
    cuts = [0]
    acc = 0.0
    for share in shares(jobs)[:-1]:
        acc += share * total
        target = int(acc)
        i = next((k for k in range(len(files)) if begins[k] <= target < begins[k] + sizes[k]), None)
        if i is None:
            break
        local = target - begins[i]
        kind = sniff(files[i])
        at = None
        if kind is not None:
            with files[i].open("rb") as f:
                at = readers[kind].boundary(f, local)
        if at is None:
            at = 0 if local < sizes[i] - local else sizes[i]
        cut = begins[i] + at
        if cut > cuts[-1]:
            cuts.append(cut)
    if cuts[-1] < total:
        cuts.append(total)
    runs: list[list[Piece]] = [[] for _ in range(len(cuts) - 1)] or [[]]
    for path, begin, size in zip(files, begins, sizes, strict=True):
        if size == 0:  # an empty file goes where it falls, so its warning comes in order
            runs[next((r for r in range(len(cuts) - 1) if begin < cuts[r + 1]), len(runs) - 1)].append(Piece(str(path)))
            continue
        for r in range(len(cuts) - 1):
            lo, hi = max(cuts[r], begin), min(cuts[r + 1], begin + size)
            if lo < hi:
                runs[r].append(_piece(path, lo - begin, None if hi == begin + size else hi - begin, sniff(path)))
    return [run for run in runs if run]


def _piece(path: Path, start: int, end: int | None, kind: int | None) -> Piece:
    if start == 0 and end is None:
        return Piece(str(path))
    return Piece(str(path), start, end, kind, at_start=start == 0, at_end=end is None)


class _Window(io.RawIOBase):
    """Bytes ``[start, end)`` of an open file, as a stream that ends at ``end``."""

    def __init__(self, file: io.BufferedReader, start: int, end: int | None):
        file.seek(start)
        self._file = file
        self._left = -1 if end is None else end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self._left == 0:
            return 0
        view = memoryview(buf)
        if 0 < self._left < len(view):
            view = view[: self._left]
        n = self._file.readinto(view) or 0
        if self._left > 0:
            self._left -= n
        return n


def read_piece(
    piece: Piece,
    readers: Sequence[Reader],
    units: UnitTable,
    emit: Callable[[Span], None],
    warn: Callable[[ReadWarning], None],
    position: Callable[[int], None] | None,
    read_whole: Callable[..., None],
) -> None:
    """Read one piece; errors and warnings point into the whole file."""
    if piece.whole:
        read_whole(Path(piece.path), units, emit, warn, position)
        return
    assert piece.reader is not None
    found: list[ReadWarning] = []
    try:
        raw = open(piece.path, "rb")  # noqa: SIM115 - closed below, with the window over it
    except OSError as exc:
        raise InputError(piece.path, f"cannot open: {exc.strerror or exc}") from None
    with raw, io.BufferedReader(_Window(raw, piece.start, piece.end), buffer_size=1 << 20) as stream:
        if position is not None:
            emit = reporting(emit, PROGRESS_EVERY, lambda: position(raw.tell() - piece.start))

        try:
            readers[piece.reader].read(
                piece.path, stream, units, emit, found.append, at_start=piece.at_start, at_end=piece.at_end
            )
        except InputError as exc:
            raise _shift_error(exc, piece) from None
        except OSError as exc:
            raise InputError(piece.path, f"cannot read: {exc}") from None
    for w in found:
        warn(_shift_warning(w, piece))


def _lines_before(path: str, offset: int) -> int:
    """How many lines start before ``offset``: only counted when an error or warning needs it."""
    n = 0
    with open(path, "rb") as f:
        left = offset
        while left > 0:
            chunk = f.read(min(left, 1 << 24))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def _shift_error(exc: InputError, piece: Piece) -> InputError:
    line = None if exc.line is None else exc.line + _lines_before(piece.path, piece.start)
    offset = None if exc.offset is None else exc.offset + piece.start
    return InputError(exc.path, exc.message, line=line, offset=offset)


def _shift_warning(w: ReadWarning, piece: Piece) -> ReadWarning:
    line = None if w.line is None else w.line + _lines_before(piece.path, piece.start)
    offset = None if w.offset is None else w.offset + piece.start
    return ReadWarning(w.path, w.message, line=line, offset=offset)


# --- the hand-over from a reader process to the parent -----------------------------------------


class _Outcome(msgspec.Struct):
    """What a reader process found, besides its spans: its payload's last frame."""

    warnings: list[ReadWarning]
    error: tuple[str, str, int | None, int | None] | None  # an InputError's path, message, line, offset
    resources: list[tuple[Hashable, Unit]]
    threads: list[tuple[tuple[int, int | None, str | None], Unit]]
    #: For each unit in the order the frames first use it, its index in ``resources + threads``.
    unit_order: list[int]


#: Spans per frame of a payload: the reader keeps a frame's spans, the parent a frame's columns.
_FRAME_SPANS = 1 << 16
_FRAME = struct.Struct(">Q")


class _FrameWriter:
    """A reader process's spans, written as frames of columns while it reads.

    Columns, not pickled ``Span`` objects: pickle shares no ints, so each span would come back
    with its own copy of its trace id, parent id and flags (over 100 bytes more per span); as
    columns each id goes once per frame, with an index per use, and the parent rebuilds the
    records in C (``map(Span, ...)``). Frame by frame, so that the reader never holds its whole
    share as objects: it would double the memory of the read while both processes are at work.
    """

    def __init__(self, out: BinaryIO):
        self.out = out
        self.spans: list[Span] = []
        self.unit_index: dict[int, int] = {}  # id(unit) -> its index in ``units``
        self.units: list[Unit] = []  # in the order the frames first use them

    def emit(self, span: Span) -> None:
        self.spans.append(span)
        if len(self.spans) >= _FRAME_SPANS:
            self.flush()

    def frame(self, obj: object) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        self.out.write(_FRAME.pack(len(data)))
        self.out.write(data)

    def flush(self) -> None:
        part, self.spans = self.spans, []
        if not part:
            return
        traces: dict[int, int] = {}
        ids: dict[int, int] = {}  # a parent id and the span it names share one object, as when read here
        trace_index = [traces.setdefault(s.trace_id, len(traces)) for s in part]
        span_index = [ids.setdefault(s.span_id, len(ids)) for s in part]
        parent_index = [ids.setdefault(s.parent_span_id, len(ids)) for s in part]
        unit_index = []
        unit: Unit | None = None
        at = 0
        for s in part:  # spans come in runs of one unit: look it up once a run
            if s.unit is not unit:
                unit = s.unit
                found = self.unit_index.get(id(unit))
                if found is None:
                    found = self.unit_index[id(unit)] = len(self.units)
                    self.units.append(unit)
                at = found
            unit_index.append(at)
        self.frame(
            (
                list(traces),
                trace_index,
                list(ids),
                span_index,
                parent_index,
                [s.name for s in part],
                [s.kind for s in part],
                [s.start for s in part],
                [s.end for s in part],
                [s.flags for s in part],
                unit_index,
                [s.links for s in part],
                [s.status for s in part],
            )
        )


#: One object per flags value, as the readers keep them.
_FLAGS: dict[int, int] = {}


def _frames(view: memoryview) -> list[tuple[int, int]]:
    """(start, end) of each frame's pickle."""
    out = []
    pos = 0
    while pos < len(view):
        (n,) = _FRAME.unpack_from(view, pos)
        out.append((pos + _FRAME.size, pos + _FRAME.size + n))
        pos += _FRAME.size + n
    return out


def _unpack(
    data: mmap.mmap, units: UnitTable, release: Callable[[int, int], None] = lambda start, end: None
) -> tuple[list[Span], _Outcome]:
    """A reader's payload back into ``Span`` records. ``release(start, end)`` is told of each
    frame done with, so that its memory can go as the records it became arrive."""
    view = memoryview(data)
    frames = _frames(view)
    *span_frames, (lo, hi) = frames
    outcome: _Outcome = pickle.loads(view[lo:hi])
    adopted = units.adopt(outcome.resources, outcome.threads)
    by_use = [adopted[i] for i in outcome.unit_order]
    spans: list[Span] = []
    for lo, hi in span_frames:
        columns = pickle.loads(view[lo:hi])
        traces, trace_index, ids, span_index, parent_index, *rest = columns
        names, kinds, starts, ends, flags, unit_index, links, status = rest
        spans += map(
            Span,
            map(traces.__getitem__, trace_index),
            map(ids.__getitem__, span_index),
            map(ids.__getitem__, parent_index),
            names,
            kinds,
            starts,
            ends,
            map(_FLAGS.setdefault, flags, flags),
            map(by_use.__getitem__, unit_index),
            links,
            status,
        )
        del columns, rest, traces, ids, trace_index, span_index, parent_index, unit_index
        release(lo - _FRAME.size, hi)
    view.release()
    return spans, outcome


def _read_share(out: BinaryIO, run: list[Piece], read: Callable[..., None], progress: mmap.mmap, slot: int) -> None:
    """What a reader process does: read its pieces, writing frames of spans as it goes, then the
    outcome (``_FrameWriter``). Its progress goes to its slot of the shared ``progress`` map,
    where the parent sums it."""
    units = UnitTable()
    writer = _FrameWriter(out)
    warnings: list[ReadWarning] = []
    error = None
    done = 0
    try:
        for piece in run:
            base = done

            def position(pos: int, base: int = base) -> None:
                struct.pack_into(">Q", progress, 8 * slot, base + pos)

            read(piece, units, writer.emit, warnings.append, position)
            done = base + piece_size(piece)
            struct.pack_into(">Q", progress, 8 * slot, done)
    except InputError as exc:
        error = (exc.path, exc.message, exc.line, exc.offset)
    writer.flush()
    resources, threads = units.entries()
    everyone = {id(u): i for i, u in enumerate([u for _, u in resources] + [u for _, u in threads])}
    order = [everyone[id(u)] for u in writer.units]
    writer.frame(_Outcome(warnings, error, resources, threads, order))


def piece_size(piece: Piece) -> int:
    end = piece.end if piece.end is not None else os.path.getsize(piece.path)
    return end - piece.start


def read_runs(
    runs: list[list[Piece]],
    units: UnitTable,
    read: Callable[..., None],
    progress: Callable[[int], None] | None,
) -> tuple[list[Span], list[ReadWarning]]:
    """Read ``runs[0]`` here and every other run in a forked process; merge in order.

    ``read(piece, units, emit, warn, position)`` reads one piece. The first error in file order
    wins, as it would reading alone. A reader process that dies (killed, out of memory) is not an
    input error: its pieces are read again here.
    """
    shared = mmap.mmap(-1, 8 * len(runs))
    children: list[Forked | None] = []
    try:
        for slot, run in enumerate(runs[1:], start=1):
            try:
                children.append(Forked(functools.partial(_read_share, run=run, read=read, progress=shared, slot=slot)))
            except OSError:  # no more processes or memory for one: this process reads the rest
                children += [None] * (len(runs) - slot)
                break
        spans: list[Span] = []
        warnings: list[ReadWarning] = []
        done = 0

        def report(pos: int) -> None:
            if progress is not None:
                others = sum(struct.unpack_from(">Q", shared, 8 * i)[0] for i in range(1, len(runs)))
                progress(done + pos + others)

        for piece in runs[0]:
            read(piece, units, spans.append, warnings.append, report)
            done += piece_size(piece)
            report(0)
        for child, run in zip(children, runs[1:], strict=True):
            data = child.result() if child is not None else None
            if data is None:  # the process died, or never started: read its share here
                for piece in run:
                    read(piece, units, spans.append, warnings.append, report)
                continue
            assert child is not None
            with data:
                theirs, outcome = _unpack(data, units, child.release)
            child.close()
            spans += theirs
            del theirs
            warnings += outcome.warnings
            if outcome.error is not None:
                path, message, line, offset = outcome.error
                raise InputError(path, message, line=line, offset=offset)
        if progress is not None:
            progress(sum(piece_size(p) for run in runs for p in run))
        return spans, warnings
    finally:
        for child in children:
            if child is not None:
                child.close()
        shared.close()
