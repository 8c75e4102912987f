"""Decompressing request bodies with memory bounded by bytes, over both transports.

A gzip body a few kB on the wire can inflate to the whole size limit (64 MiB by default): sixteen
such requests at once held a gigabyte, all of it only to be refused. So decompression runs in
slots, a few at a time for the whole receiver, and a slot is held until the request's inflated
body has been parsed and journaled (released by the caller): the bodies alive at once are at most
``slots`` x the limit, whatever the number of connections. Uncompressed bodies need no slot: their
bytes came over the wire, and the transports bound those per request already.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

#: Inflated bodies alive at once; with the default limit, 2 x 64 MiB.
DEFAULT_SLOTS = 2
#: Output produced per step, so that the bytes held are counted as they grow.
_STEP = 1 << 20


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
            counted = 0
            try:
                d = zlib.decompressobj(wbits)
                parts: list[bytes] = []
                tail = data
                while True:
                    try:
                        out = d.decompress(tail, _STEP)
                    except zlib.error as exc:
                        raise Corrupt(str(exc)) from None
                    self._add(len(out))
                    counted += len(out)
                    if counted > limit:
                        parts.clear()
                        raise TooLarge(f"decompresses to more than the limit of {limit} bytes (--max-message-mib)")
                    parts.append(out)
                    tail = d.unconsumed_tail
                    if d.eof or (not tail and not out):
                        break
                if not d.eof:
                    raise Corrupt("truncated")
                body = parts[0] if len(parts) == 1 else b"".join(parts)
                # The parts and their join are both alive for a moment; count the join once.
                parts.clear()
                yield body
            finally:
                self._add(-counted)
