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


def where(path: str, line: int | None, offset: int | None) -> str:
    """``file:line``, or ``file (byte offset N)`` for binary input: how errors and warnings point."""
    if line is not None:
        return f"{path}:{line}"
    if offset is not None:
        return f"{path} (byte offset {offset})"
    return path


class UsageError(CtxdoctorError):
    """The command line or configuration asks for something impossible."""
