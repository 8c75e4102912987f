"""The reader stage: one module per input format, each turning bytes into ``Span`` records.

A new input format is one new module with a class that satisfies ``Reader`` and one line in
``readers/__init__.py``'s registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, Protocol

import msgspec

from ctxdoctor.errors import where
from ctxdoctor.model import Span
from ctxdoctor.units import UnitTable


class ReadWarning(msgspec.Struct, frozen=True):
    """Something in the input that was skipped, with where it was."""

    path: str
    message: str
    line: int | None = None
    offset: int | None = None

    def __str__(self) -> str:
        return f"{where(self.path, self.line, self.offset)}: {self.message}"


SpanSink = Callable[[Span], None]

#: Longest attribute value kept in ``Span.values``: past it a value is text (a statement, a body,
#: a stack trace), not an id, and keeping it would make memory grow with what apps log.
MAX_VALUE_CHARS = 256

#: Spans between two progress reports within a file.
PROGRESS_EVERY = 1 << 16


def reporting(emit: SpanSink, every: int, report: Callable[[], None]) -> SpanSink:
    """``emit`` that also calls ``report()`` after every ``every`` spans: progress for a bar,
    without the readers knowing about it."""
    count = 0

    def counted(span: Span) -> None:
        nonlocal count
        emit(span)
        count += 1
        if count % every == 0:
            report()

    return counted


class Reader(Protocol):
    """Reads one dump stream, handing each span to ``emit`` as soon as it is decoded."""

    name: str

    def sniff(self, head: bytes) -> bool:
        """Whether a stream starting with ``head`` (decompressed) is in this format."""
        ...

    def read(
        self,
        path: str,
        stream: BinaryIO,
        units: UnitTable,
        emit: SpanSink,
        warn: Callable[[ReadWarning], None],
        *,
        at_start: bool = True,
        at_end: bool = True,
        values: bool = False,
    ) -> int | None:
        """Decode every span. Raise ``InputError`` for malformed input; ``warn`` for a truncated tail.

        ``values``: also keep each span's string and integer attributes (``Span.values``).

        Returns how many spans were emitted where the reader counts them (a valid document with
        none is then looked at again, ``check_is_trace_dump``), or ``None`` where the format's
        reader says itself when a document holds no span.

        A stream may be one piece of a file (see ``boundary``): ``at_start`` says it begins the
        file and ``at_end`` that it ends it, so that what only the first or the last record may
        be (the head of a pretty-printed document, a tail cut short by the writer) is judged as
        it would be in the whole file.
        """
        ...

    def boundary(self, file: BinaryIO, offset: int) -> int | None:
        """Where the first record at or after ``offset`` of a plain, seekable file starts (the
        file's size if none does), so that the file can be read in pieces by several processes;
        ``None`` when this file cannot be cut."""
        ...
