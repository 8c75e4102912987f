"""Give large blocks back to the OS as soon as they are freed (glibc), in the receiver's processes.

glibc serves a block of 128 kB or more with its own mapping, returned to the OS when freed; but
each such free raises that threshold to the freed block's size (up to 32 MiB), and from then on
blocks of that size come from the heap, of which each thread keeps its own arena. A receiver
whose threads each handle a request with a 20 MiB value once then holds 20 MiB per thread for
good: hundreds of MB after a burst that lasted a second. A fixed threshold keeps large blocks
mapped, so memory returns to its idle size after a burst. Blocks that large are rare (a request
near the size limit, a huge attribute value): mapping each costs little against processing it.
Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

#: mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks of this size or more are mapped, and unmapped when freed.
LARGE_BLOCK = 1 << 20

_done = False


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold at ``LARGE_BLOCK`` for this process; True if it took."""
    global _done
    if _done:
        return True
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK) == 1
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * LARGE_BLOCK)
        _done = ok
    return _done
