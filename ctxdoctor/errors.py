"""Errors the core raises; the CLI maps each to one exit code in ``exitcodes.py``."""

from __future__ import annotations

from pathlib import Path


class CtxdoctorError(Exception):
    """Base of every error that is the user's input's fault rather than a bug."""


class InputError(CtxdoctorError):
    """A dump cannot be read. Says which file, where (line or byte offset) and what was wrong."""

    def __init__(self, path: Path | str, message: str, *, line: int | None = None, offset: int | None = None):
        self.path = str(path)
        self.line = line
        self.offset = offset
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{where(self.path, self.line, self.offset)}: {self.message}"


def printable_path(path: str) -> str:
    """``path`` on one line: a newline or other control character in a file name would split an
    error over two lines (or move the cursor), so it is shown as an escape, as ``repr`` would."""
    if path.isprintable():
        return path
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def where(path: str, line: int | None, offset: int | None) -> str:
    """``file:line``, or ``file (byte offset N)`` for binary input: how errors and warnings point."""
    path = printable_path(path)
    if line is not None:
        return f"{path}:{line}"
    if offset is not None:
        return f"{path} (byte offset {offset})"
    return path


class UsageError(CtxdoctorError):
    """The command line or configuration asks for something impossible."""
