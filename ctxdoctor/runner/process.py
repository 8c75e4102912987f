"""Running the command: its own process group, signals passed on, the terminal handed over.

Why a process group of its own: a CI runner's SIGTERM (or ``kill -INT``) reaches ctxdoctor,
which must pass it to the whole command (``npm test`` and the node it starts, a test runner and
its workers) exactly once, and then stay alive to analyse what arrived. With the command in
ctxdoctor's own group a terminal's Ctrl-C would reach it twice.

Why hand it the terminal: in an interactive shell the command's group becomes the terminal's
foreground group, as a shell does for a job, so Ctrl-C goes straight to the command (and not to
ctxdoctor, which keeps running and analyses), and a command that reads the terminal (a debugger
prompt) is not stopped by SIGTTIN. The terminal is given back when the command exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: After this many signals the command is killed outright (SIGKILL to its group).
KILL_AFTER = 3


class CommandNotFound(Exception):
    pass


@dataclass
class Outcome:
    returncode: int  # shell convention: 128 + N when killed by signal N
    signal: int | None  # the signal that killed the command, if any
    received: list[int] = field(default_factory=list)  # signals ctxdoctor received and passed on
    duration: float = 0.0


def shell_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _terminal_fd() -> int | None:
    """stdin's fd if it is a terminal whose foreground group is ours (an interactive shell)."""
    try:
        fd = sys.stdin.fileno()
        if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _set_foreground(fd: int, pgid: int) -> None:
    # A background process that calls tcsetpgrp gets SIGTTOU; ignoring it makes the call work.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, previous)


class Command:
    """Start ``argv`` in a new process group and wait for it, passing signals on.

    Must be used from the main thread (signal handlers). ``on_signal`` is called, in the main
    thread, with each signal received.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: str | None = None,
        on_signal: Callable[[int], None] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.on_signal = on_signal
        self.proc: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None
        self.received: list[int] = []
        self._tty: int | None = None
        self._previous: dict[int, Any] = {}
        self.interrupted = threading.Event()

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        self.interrupted.set()
        if self.pgid is not None and self.proc is not None and self.proc.poll() is None:
            sig = signal.SIGKILL if len(self.received) >= KILL_AFTER else signum
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)
        if self.on_signal is not None:
            self.on_signal(signum)

    def install_handlers(self) -> None:
        for sig in FORWARDED:
            self._previous[sig] = signal.signal(sig, self._handler)

    def restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if sys.version_info >= (3, 11):
            kwargs["process_group"] = 0
            self._tty = _terminal_fd()
        else:  # no race-free setpgid before exec: a new session (and no terminal hand-over)
            kwargs["start_new_session"] = True
        try:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, **kwargs)
        except FileNotFoundError:
            raise CommandNotFound(f"{self.argv[0]}: command not found") from None
        except PermissionError:
            raise CommandNotFound(f"{self.argv[0]}: permission denied") from None
        self.pgid = self.proc.pid
        if self._tty is not None:
            _set_foreground(self._tty, self.pgid)
            # It may have touched the terminal before it was its own and been stopped for it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGCONT)

    def wait(self) -> Outcome:
        assert self.proc is not None
        started = time.monotonic()
        try:
            rc = self.proc.wait()
        finally:
            if self._tty is not None:
                _set_foreground(self._tty, os.getpgrp())
        sig = -rc if rc < 0 else None
        return Outcome(shell_code(rc), sig, list(self.received), time.monotonic() - started)

    def group_alive(self) -> bool:
        """Whether any process of the command's group (e.g. a straggling child) still runs."""
        if self.pgid is None:
            return False
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

