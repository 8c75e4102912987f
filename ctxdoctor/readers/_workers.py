"""Work done in a forked process, its result handed back through a memory file.

Why fork: ``analyze`` is pure Python per span, the GIL keeps threads from sharing that work, and
a forked process starts with the parent's modules and data already in memory (nothing to import
or send). Why a memory file: the parent maps it once the child is done, so a large result is
never copied through a pipe or into the parent's heap.

Only where ``os.fork`` exists; callers keep to one process elsewhere. A child that fails for any
reason (killed, out of memory, a bug) yields no result, and the caller does the work itself, so
a failure shows where it can be read: in the parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import mmap
import os
import signal
import tempfile
from collections.abc import Callable
from typing import BinaryIO

CAN_FORK = hasattr(os, "fork")


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_PUNCH_HOLE, _KEEP_SIZE = 0x02, 0x01  # fallocate(2) modes


def _libc_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    fn.restype = ctypes.c_int
    return fn


_fallocate = _libc_fallocate()


def _scratch() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("ctxdoctor", 0)
    fd, name = tempfile.mkstemp(prefix="ctxdoctor-")
    os.unlink(name)
    return fd


class Forked:
    """A forked process that writes its result with ``write(out)``. Raises ``OSError`` when no
    process can be made (out of processes or memory); callers then do the work themselves."""

    def __init__(self, write: Callable[[BinaryIO], None]):
        self.fd = _scratch()
        try:
            self.pid = os.fork()
        except OSError:
            os.close(self.fd)
            raise
        if self.pid == 0:  # pragma: no cover - the child (seen through its result)
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
                gc.disable()
                with open(self.fd, "wb", closefd=False, buffering=1 << 20) as out:
                    write(out)
                code = 0
            finally:
                # No atexit handlers, no flushing of the parent's buffers, no cleanup of objects
                # that are the parent's.
                os._exit(code)

    def result(self) -> mmap.mmap | None:
        """Wait for the child; what it wrote, or None if it did not finish."""
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        size = os.fstat(self.fd).st_size
        if os.waitstatus_to_exitcode(status) != 0 or size == 0:
            return None
        return mmap.mmap(self.fd, size, access=mmap.ACCESS_READ)

    def release(self, start: int, end: int) -> None:
        """Free the memory of bytes ``[start, end)`` of the result, once read (whole pages;
        Linux). The result is a memory file: what the child wrote takes memory until freed."""
        page = mmap.PAGESIZE
        lo = -(-start // page) * page
        hi = end // page * page
        if hi > lo and self.fd >= 0 and _fallocate is not None:
            _fallocate(self.fd, _PUNCH_HOLE | _KEEP_SIZE, lo, hi - lo)  # best effort: a failure keeps them

    def close(self) -> None:
        """Stop the child if it still runs, and free its result."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            self.pid = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
