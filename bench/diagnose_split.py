"""Where the diagnosis spends its CPU time, finder by finder, in this tree or an older one.

    .venv/bin/python bench/diagnose_split.py DUMP [--tree DIR]

Reads DUMP once, then times ``diagnose(spans)`` (best of ``--repeat``) with each finder wrapped
in ``time.process_time``; the orphan search's ``_sweep`` is split into its first pass and the
calibration's pass over jittered copies (the call with ``reference=``). ``--tree DIR`` imports
the package of an older checkout instead (``git worktree add /tmp/old REV``), for a baseline on
the same dump. Not profiled: the figures are the real cost. See bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any


def _sweep_label(kwargs: dict[str, Any]) -> str:
    return "_sweep, calibration pass" if kwargs.get("reference") is not None else "_sweep"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dump", type=Path)
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.tree.resolve()))
    import ctxdoctor
    import ctxdoctor.diagnose as diagnose_mod
    import ctxdoctor.diagnose.orphans as orphans_mod
    from ctxdoctor.readers import read_paths

    print(f"package: {Path(ctxdoctor.__file__).parent}")
    spans = read_paths([args.dump]).spans
    gc.collect()
    gc.freeze()
    spent: dict[str, float] = {}

    def timed(module: Any, name: str, label: Any = None) -> None:
        original = getattr(module, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            key = label(k) if label else name
            t0 = time.process_time()
            try:
                return original(*a, **k)
            finally:
                spent[key] = spent.get(key, 0.0) + time.process_time() - t0

        setattr(module, name, wrapper)

    for name in ("find_orphans", "find_silent_dispatches", "find_leaks"):
        if hasattr(diagnose_mod, name):
            timed(diagnose_mod, name)
    if hasattr(orphans_mod, "_sweep"):
        timed(orphans_mod, "_sweep", _sweep_label)
    best: tuple[float, dict[str, float]] | None = None
    for _ in range(max(args.repeat, 1)):
        spent.clear()
        t0 = time.process_time()
        diagnose_mod.diagnose(spans)
        total = time.process_time() - t0
        if best is None or total < best[0]:
            best = (total, dict(spent))
    assert best is not None
    print(f"{len(spans):,} spans; diagnose: {best[0]:.2f} CPU s")
    for key, seconds in sorted(best[1].items(), key=lambda kv: -kv[1]):
        print(f"  {key}: {seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
