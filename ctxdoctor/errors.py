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
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
        elif self.offset is not None:
            where += f" (byte offset {self.offset})"
        return f"{where}: {self.message}"


class UsageError(CtxdoctorError):
    """The command line or configuration asks for something impossible."""
