"""Check that two checkouts give byte-identical ``ctxdoctor analyze`` JSON reports.

    .venv/bin/python bench/report_diff.py --before DIR [--after DIR] [--sizes 10k,100k,1m]
                                          [--extra GLOB]... [--only SUBSTRING] [--keep DIR]

A speed-up of the diagnosis must not change what it finds. This runs
``python -m ctxdoctor analyze DUMP --format json --output REPORT`` once with each tree's package
(the tree is the working directory, which comes first on ``sys.path`` for ``-m``: make the
``before`` tree with ``git worktree add --detach /tmp/before REV``) over every dump of the set,
and compares the two reports byte for byte. The set: the seeded ``dumpgen`` dumps of
``--sizes`` (generated or reused from ``bench/.cache/``, as ``bench/analyze.py`` does), and the
committed ``fixtures/scenarios/*/dump.json``, ``fixtures/corpus/*/dump.json`` and
``fixtures/leaks/*/dump.json``, and any ``--extra`` glob (the recorded accuracy corpus in
``bench/.cache/corpus/*/dump.json``, say). The report has no timing or date field, so nothing is normalised.

Prints one line per dump and exits 1 if any report differs (with the first differing line), or
if either run failed.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import analyze, dumpgen

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_GLOBS = ("fixtures/scenarios/*/dump.json", "fixtures/corpus/*/dump.json", "fixtures/leaks/*/dump.json")


def dumps(sizes: list[str], seed: int, cache: Path, extra: list[str]) -> list[tuple[str, Path]]:
    """(label, path) of every dump to compare, the generated ones first."""
    out: list[tuple[str, Path]] = []
    for size in sizes:
        target, meta = analyze.ensure_dump(size, seed, cache, keep_stale=True)
        out.append((f"dumpgen {size}", target / meta["json_files"][0]))
    for pattern in FIXTURE_GLOBS:
        out.extend((str(p.parent.relative_to(ROOT)), p) for p in sorted(ROOT.glob(pattern)))
    for pattern in extra:
        found = sorted(Path(p) for p in glob.glob(pattern))
        out.extend((str(p.parent), p) for p in found)
    return out


def report(tree: Path, dump: Path, out: Path) -> tuple[bytes | None, float, str]:
    """The report's bytes (None if the run failed), the wall time, and stderr's tail."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ctxdoctor", "analyze", str(dump), "--format", "json", "--output", str(out)],
        cwd=tree,
        capture_output=True,
        text=True,
        env=os.environ | {"COLUMNS": "200"},
    )
    wall = time.perf_counter() - t0
    # Exit 1 is the gate (an orphan ratio over a threshold), not a failure; 2 and up are errors.
    if proc.returncode not in (0, 1) or not out.exists():
        return None, wall, f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"
    return out.read_bytes(), wall, ""


def first_difference(a: bytes, b: bytes) -> str:
    for i, (x, y) in enumerate(zip(a.splitlines(), b.splitlines(), strict=False)):
        if x != y:
            return f"line {i + 1}:\n    before: {x[:300]!r}\n    after:  {y[:300]!r}"
    return f"one report is a prefix of the other ({len(a)} against {len(b)} bytes)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="checkout of the code before the change")
    ap.add_argument("--after", type=Path, default=ROOT, help="checkout of the code after it (default: this one)")
    ap.add_argument("--sizes", default="10k,100k,1m", help="dumpgen sizes ('' for none)")
    ap.add_argument("--seed", type=int, default=dumpgen.DEFAULT_SEED)
    ap.add_argument("--cache-dir", type=Path, default=analyze.DEFAULT_CACHE)
    ap.add_argument("--extra", action="append", default=[], help="more dumps (a glob; repeatable)")
    ap.add_argument("--only", default="", help="only the dumps whose label contains this")
    ap.add_argument("--keep", type=Path, default=None, help="keep the reports in this directory")
    args = ap.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    todo = [(label, p) for label, p in dumps(sizes, args.seed, args.cache_dir, args.extra) if args.only in label]
    before, after = args.before.resolve(), args.after.resolve()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="ctxdoctor-report-diff-") as tmp:
        keep = args.keep or Path(tmp)
        keep.mkdir(parents=True, exist_ok=True)
        for n, (label, path) in enumerate(todo):
            stem = f"{n:03d}-{label.replace('/', '_').replace(' ', '_')}"
            a, wa, ea = report(before, path, keep / f"{stem}.before.json")
            b, wb, eb = report(after, path, keep / f"{stem}.after.json")
            if a is None or b is None:
                failures += 1
                print(f"FAIL  {label}: before {ea or 'ok'}; after {eb or 'ok'}", flush=True)
            elif a != b:
                failures += 1
                print(f"DIFF  {label}: {first_difference(a, b)}", flush=True)
            else:
                print(f"same  {label} ({len(a):,} bytes; {wa:.1f} s before, {wb:.1f} s after)", flush=True)
    print(f"{len(todo) - failures} of {len(todo)} reports byte-identical")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
