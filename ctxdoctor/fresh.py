"""The final analysis of ``listen`` and ``run``, done in a fresh Python process.

Why: a big dump is read by several forked processes (``analyze --jobs``), but these
commands have run a gRPC server by then, and forking a process that loaded grpcio depends on
grpcio's fork support, whose defaults have changed between releases. A fresh interpreter has
never loaded grpcio and forks freely. Its start-up (~0.3 s) is paid only for dumps big enough to be
read in parallel.

The child gets the dump and the settings, and hands back the ``Report`` (pickled) or the input
error. If the child cannot give an answer (killed, out of memory, a bug), the caller analyses the
dump in its own process, so a failure shows where it can be read.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import ctxdoctor
from ctxdoctor.errors import InputError
from ctxdoctor.findings import Report, Settings
from ctxdoctor.forked import CAN_FORK, usable_cpus
from ctxdoctor.readers.parallel import PARALLEL_MIN_BYTES


def worth_it(path: Path) -> bool:
    """Whether the dump is big enough for the parallel readers to pay for a fresh process."""
    try:
        return CAN_FORK and usable_cpus() > 1 and path.stat().st_size >= PARALLEL_MIN_BYTES
    except OSError:
        return False


def analyse(path: Path, settings: Settings, jobs: int = 0) -> Report | None:
    """The report on ``path``, computed in a fresh process that reads with ``jobs`` processes
    (0: one per CPU, at most 8). Raises ``InputError`` for a dump that cannot be read; None if the process
    gave no answer."""
    env = dict(os.environ)
    root = str(Path(ctxdoctor.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ctxdoctor.fresh", str(path), str(jobs)],
            input=pickle.dumps(settings),
            capture_output=True,
            env=env,
            check=False,
        )
    except OSError:
        return None
    if proc.returncode != 0:
        return None
    try:
        answer = pickle.loads(proc.stdout)
    except Exception:  # no answer is no answer, whatever broke it
        return None
    match answer:
        case ("report", Report() as report):
            return report
        case ("input", str(message), line, offset):
            raise InputError(path, message, line=line, offset=offset)
    return None


def _main(argv: list[str]) -> int:
    from ctxdoctor.diagnose import diagnose
    from ctxdoctor.readers import read_paths

    path, jobs = Path(argv[0]), int(argv[1])
    jobs = jobs or min(usable_cpus(), 8)
    settings = pickle.loads(sys.stdin.buffer.read())
    try:
        dump = read_paths([path], jobs=jobs)
    except InputError as exc:
        answer: tuple[object, ...] = ("input", exc.message, exc.line, exc.offset)
    else:
        warnings = [str(w) for w in dump.warnings]
        answer = ("report", diagnose(dump.spans, settings, warnings=warnings, files=dump.files))
    sys.stdout.buffer.write(pickle.dumps(answer))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
