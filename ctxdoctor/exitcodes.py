"""Every exit code ctxdoctor uses, in one place (scripts and CI depend on them)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  #: analysed, and the gate (if any) passed
    GATE_FAILED = 1  #: the orphan ratio is over the threshold
    USAGE = 2  #: bad command line or configuration
    BAD_INPUT = 3  #: a dump could not be read
