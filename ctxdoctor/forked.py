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
import pickle
import signal
import tempfile
from collections.abc import Callable
from typing import BinaryIO, Generic, TypeVar

T = TypeVar("T")

CAN_FORK = hasattr(os, "fork")


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def memory_to_spare(resident_factor: float) -> bool:
    """Whether the system has ``resident_factor`` times this process's resident memory available
    (``MemAvailable``): a forked child that touches the parent's objects copies their pages.
    True where this cannot be read (not Linux)."""
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    return available > resident_factor * resident


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


class Call(Generic[T]):
    """``fn(*args)`` started in a forked process; ``join()`` returns its value (computed here
    if the child failed). ``close()`` when the value is no longer wanted."""

    def __init__(self, fn: Callable[..., T], *args: object):
        self._fn, self._args = fn, args
        self._proc = Forked(lambda out: pickle.dump(fn(*args), out, protocol=pickle.HIGHEST_PROTOCOL))

    def join(self) -> T:
        try:
            data = self._proc.result()
            if data is None:
                return self._fn(*self._args)
            with data:
                value: T = pickle.loads(data)
            return value
        finally:
            self._proc.close()

    def close(self) -> None:
        self._proc.close()
