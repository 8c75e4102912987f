"""Where one ``analyze`` spends its CPU time, phase by phase, in this tree or an older one.

    .venv/bin/python bench/phases.py DUMP [--tree DIR] [--jobs N]

Times, in one fresh process, what ``ctxdoctor analyze DUMP --format json --output FILE`` does:
importing the package, reading the dump (``read_paths``), diagnosing it (``diagnose``, the
cyclic collector as the tree leaves it) and rendering the JSON report to a file, each with
``time.process_time`` (this process only: with ``--jobs`` above 1 the readers' CPU is not in
it). ``--tree DIR`` imports the package of an older checkout instead (``git worktree add
/tmp/old REV``); run the trees alternately. Not profiled: the figures are the real cost. See
bench/README.md.
"""

from __future__ import annotations

import time

_started = time.process_time()

import argparse  # noqa: E402 (the clock starts before any import)
import inspect  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dump", type=Path)
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.tree.resolve()))
    t0 = time.process_time()
    from rich.console import Console

    import ctxdoctor
    from ctxdoctor.diagnose import diagnose
    from ctxdoctor.readers import read_paths
    from ctxdoctor.render import get_renderer

    t1 = time.process_time()
    # Older trees' ``read_paths`` may not take ``jobs``.
    jobs = {"jobs": args.jobs} if "jobs" in inspect.signature(read_paths).parameters else {}
    dump = read_paths([args.dump], **jobs)
    t2 = time.process_time()
    report = diagnose(dump.spans, warnings=[str(w) for w in dump.warnings], files=dump.files)
    t3 = time.process_time()
    with tempfile.TemporaryFile("w") as fh:
        get_renderer("json").render(report, Console(file=fh, width=100, no_color=True, highlight=False))
    t4 = time.process_time()
    print(
        f"{Path(ctxdoctor.__file__).parent}: {len(dump.spans):,} spans; CPU s: start-up {t0 - _started:.2f}, "
        f"import {t1 - t0:.2f}, read {t2 - t1:.2f}, diagnose {t3 - t2:.2f}, render {t4 - t3:.2f}, "
        f"total {t4 - _started:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
