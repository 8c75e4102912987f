"""The one path from dump files to a ``Report``: read, then diagnose.

``analyze``, ``check``, ``run`` and ``listen`` (its final report and its live count) all go
through here, so the same dump with the same settings gives the same report whichever command
produced it. It is also the call for using ctxdoctor as a library::

    from ctxdoctor import Settings, analyze_paths
    report = analyze_paths(["dump.json"], Settings(max_orphan_ratio=0.05))

A dump big enough to read in parallel, in a process that has loaded grpcio (``listen`` and
``run`` have run a gRPC server by then), is analysed in a fresh interpreter instead: the parallel
readers fork, and forking a process that loaded grpcio depends on grpcio's fork support, whose
defaults have changed between releases. A fresh interpreter has never loaded grpcio and forks
freely; its start-up is paid only for dumps big enough to be read in parallel. If that process
gives no answer (killed, out of memory, a bug), the dump is analysed here, so a failure shows
where it can be read.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import msgspec

import ctxdoctor
from ctxdoctor.diagnose import diagnose
from ctxdoctor.errors import InputError
from ctxdoctor.findings import Report, Settings
from ctxdoctor.readers import Dump, read_paths
from ctxdoctor.readers._workers import CAN_FORK, usable_cpus
from ctxdoctor.readers.parallel import PARALLEL_MIN_BYTES

#: ``jobs=0`` reads with one process per CPU, up to this many: past it the merge dominates.
MAX_JOBS = 8


def default_jobs(jobs: int) -> int:
    """``jobs`` as given, or for 0 one reader per usable CPU (at most ``MAX_JOBS``)."""
    return jobs or min(usable_cpus(), MAX_JOBS)


def analyze_dump(dump: Dump, settings: Settings | None = None) -> Report:
    """The report on spans already read.

    The report's settings say whether attribute values were read (left to the size of the
    input, the setting is ``None`` until then): a big dump read without them has not used the
    ids its spans share, and the report says so.
    """
    settings = settings or Settings()
    if settings.attribute_values is None:
        settings = msgspec.structs.replace(settings, attribute_values=dump.values)
    return diagnose(dump.spans, settings, warnings=[str(w) for w in dump.warnings], files=dump.files)


def analyze_paths(
    paths: Iterable[Path | str],
    settings: Settings | None = None,
    *,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
    diagnosing: Callable[[int], AbstractContextManager[object]] | None = None,
    fresh_process: bool = False,
) -> Report:
    """Read ``paths`` (OTLP/JSON lines or the Collector's proto format, plain or gzip) and
    diagnose them. Raises ``InputError`` for a file that is not a readable dump.

    ``jobs``: reading processes for big dumps (0: one per CPU, at most ``MAX_JOBS``).
    ``progress(bytes_done, bytes_total)`` follows the reading; ``diagnosing(spans)`` is entered
    around the diagnosis (a status line on a terminal). ``fresh_process``: the caller has loaded
    grpcio, so a dump worth reading in parallel is analysed in a fresh interpreter.
    """
    files = [Path(p) for p in paths]
    settings = settings or Settings()
    jobs = default_jobs(jobs)
    if fresh_process:
        if jobs > 1 and len(files) == 1 and _worth_a_fresh_process(files[0]):
            report = _analyze_in_fresh_process(files[0], settings, jobs)
            if report is not None:
                return report
        jobs = 1  # no forking here, whatever the fresh process did
    dump = read_paths(files, progress=progress, jobs=jobs, values=settings.attribute_values)
    with diagnosing(len(dump.spans)) if diagnosing is not None else nullcontext():
        return analyze_dump(dump, settings)


def _worth_a_fresh_process(path: Path) -> bool:
    """Whether the dump is big enough for the parallel readers to pay for a fresh process."""
    try:
        return CAN_FORK and usable_cpus() > 1 and path.stat().st_size >= PARALLEL_MIN_BYTES
    except OSError:
        return False


def _analyze_in_fresh_process(path: Path, settings: Settings, jobs: int) -> Report | None:
    """The report on ``path`` from a fresh interpreter reading with ``jobs`` processes. Raises
    ``InputError`` for a dump that cannot be read; None if the process gave no answer."""
    env = dict(os.environ)
    root = str(Path(ctxdoctor.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ctxdoctor.analysis", str(path), str(jobs)],
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
    """The fresh interpreter's side: the dump and jobs as arguments, the settings pickled on stdin,
    the pickled answer on stdout."""
    path, jobs = Path(argv[0]), int(argv[1])
    settings = pickle.loads(sys.stdin.buffer.read())
    try:
        report = analyze_paths([path], settings, jobs=jobs)
    except InputError as exc:
        answer: tuple[object, ...] = ("input", exc.message, exc.line, exc.offset)
    else:
        answer = ("report", report)
    sys.stdout.buffer.write(pickle.dumps(answer))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
