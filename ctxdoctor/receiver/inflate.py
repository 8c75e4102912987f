"""Decompressing request bodies with memory bounded by bytes, over both transports.

A gzip body a few kB on the wire can inflate to the whole size limit (64 MiB by default): sixteen
such requests at once held a gigabyte, all of it only to be refused. So a body is first inflated
a step at a time and only counted once it is past a few MiB: one past the limit (a bomb) is
refused having held a step at a time. Decompression runs in slots, a few at a time for the whole
receiver, and a slot is held until the request's inflated body has been parsed and journaled:
the bodies alive at once are at most ``slots`` x the limit, whatever the number of connections.
Uncompressed bodies need no slot: their bytes came over the wire, and the transports bound those
per request already.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Inflated bodies alive at once; with the default limit, 2 x 64 MiB.
DEFAULT_SLOTS = 2
#: Output produced per step of the first pass.
_STEP = 1 << 20
#: A body inflating to at most this is kept from the first pass; a larger one is inflated again.
KEEP_BYTES = 4 << 20


class TooLarge(Exception):
    """The body inflates to more than the limit."""


class Corrupt(Exception):
    """The body is not valid compressed data, or it is cut short."""


class InflateBudget:
    """The receiver's decompression slots, and a count of the inflated bytes held."""

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        self.slots = slots
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self.held = 0
        #: The most inflated bytes held at once since the receiver started.
        self.peak = 0

    def _add(self, n: int) -> None:
        with self._lock:
            self.held += n
            if self.held > self.peak:
                self.peak = self.held

    @contextmanager
    def inflate(self, data: bytes, wbits: int, limit: int) -> Iterator[bytes]:
        """``data`` decompressed (``wbits`` as for ``zlib.decompressobj``), held until the block
        ends. Raises ``TooLarge`` past ``limit`` bytes, ``Corrupt`` for bad or truncated data."""
        with self._slots:
            kept, size = _measure(data, wbits, limit, self._add)
            if kept is not None:
                body = kept
            else:
                # Large and within the limit: inflated again, in one allocation of its known
                # size. Holding the first pass's pieces instead leaves the heap fragmented: the
                # allocator keeps freed pieces of a few MiB, per thread, long after.
                try:
                    body = zlib.decompress(data, wbits, max(size, 1))
                except zlib.error as exc:  # pragma: no cover - the measuring pass read it whole
                    raise Corrupt(str(exc)) from None
            del kept
            counted = len(body)
            self._add(counted)
            try:
                yield body
            finally:
                self._add(-counted)


def _measure(data: bytes, wbits: int, limit: int, count: Callable[[int], None]) -> tuple[bytes | None, int]:
    """Inflate ``data`` once, a step at a time: (the body, its size) while it stays under
    ``KEEP_BYTES``; past that only the size is counted, (None, size). A body that inflates past
    ``limit`` (a gzip bomb) is refused having held one step at a time. ``count`` is told the
    bytes held as they come and go."""
    d = zlib.decompressobj(wbits)
    parts: list[bytes] | None = []
    total = 0
    held = 0
    tail = data
    try:
        while True:
            out = d.decompress(tail, _STEP)
            total += len(out)
            if total > limit:
                raise TooLarge(f"decompresses to more than the limit of {limit} bytes (--max-message-mib)")
            if parts is not None and total > KEEP_BYTES:
                parts = None
                count(-held)
                held = 0
            if parts is not None:
                parts.append(out)
                count(len(out))
                held += len(out)
            else:
                count(len(out))  # this step, for as long as it lives
                count(-len(out))
            tail = d.unconsumed_tail
            if d.eof or (not tail and len(out) < _STEP):
                break  # the end, or no input left and nothing pending
    except zlib.error as exc:
        raise Corrupt(str(exc)) from None
    finally:
        count(-held)
    if not d.eof:
        raise Corrupt("truncated")
    if parts is None:
        return None, total
    return (parts[0] if len(parts) == 1 else b"".join(parts)), total
