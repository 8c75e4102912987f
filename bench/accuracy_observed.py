"""The observed mode against the inferred mode, on the same runs of the corpus's matrix apps.

    .venv/bin/python bench/accuracy_observed.py              # the default selection (~3 min)
    .venv/bin/python bench/accuracy_observed.py --only 'node-*-thread-*' --only 'py-*-pool-*'
    .venv/bin/python bench/accuracy_observed.py --all        # every cell of bench/corpus.py
    .venv/bin/python bench/accuracy_observed.py --json out.json -v
    .venv/bin/python bench/accuracy_observed.py --list       # the selection, without running it

Each selected cell of ``bench/corpus.py`` (``fixtures/apps/python/matrix.py`` and
``fixtures/apps/node/matrix.js`` with the cell's environment) runs twice under ``ctxdoctor run``:
once with the probe and once with ``--no-probe``. Three reports are scored against the app's own
ground truth (``$CTXDOCTOR_TRUTH``), with ``bench/accuracy.py``'s scoring at the shipped defaults
(``--min-confidence`` 0.85, parents below 0.5 ambiguous):

* **observed**: the probe run's dump diagnosed, then the probe's facts applied (what ``run``
  reports);
* **inferred, same run**: the same dump diagnosed from its spans alone, so the two modes are
  compared on exactly the same spans;
* **inferred, --no-probe**: the run without the probe, diagnosed from its spans (whether loading
  the probe changed the timing the statistics read).

Columns as in ``bench/accuracy.py``: span-level precision and recall of suspected orphans, right
parent among those found, confident parents that are wrong, naive patterns missed, fixed cells
with a reported pattern, ``check --max-orphan-ratio 0.05`` verdicts right. ``observed`` adds how
many of the observed mode's flagged orphans the probe saw (the rest are the statistics' and stay
inferred). A run whose dump disagrees with its ground truth (``bench/corpus.py``'s check) is
named and left out of the scores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import corpus  # noqa: E402
from bench.accuracy import HEADER, Cell, Score, Setting, row, score_report, total  # noqa: E402
from ctxdoctor.diagnose import diagnose  # noqa: E402
from ctxdoctor.diagnose.observed import apply_observations  # noqa: E402
from ctxdoctor.diagnose.orphans import ModelParams  # noqa: E402
from ctxdoctor.findings import Report, Settings  # noqa: E402
from ctxdoctor.probe.facts import read_facts  # noqa: E402
from ctxdoctor.readers import read_paths  # noqa: E402

APPS = ROOT / "fixtures" / "apps"
MODES = ("observed", "inferred (same run)", "inferred (--no-probe run)")
#: Short tags for the per-cell lines.
TAGS = dict(zip(MODES, ("obs", "inf", "no-probe"), strict=True))
#: The shipped defaults, as ``bench/accuracy.py --default-only`` scores them.
SETTING = Setting(Settings().min_confidence, 0.5, ModelParams())


def default_selection(cells: list[corpus.Cell]) -> list[corpus.Cell]:
    """Small enough for a few minutes, wide enough to cover each hand-off: per runtime and
    hand-off the first naive cell of the design with at most 8 in flight, and per runtime the
    first two fixed cells."""
    picked: list[corpus.Cell] = []
    naive: set[tuple[str, str]] = set()
    fixed: dict[str, int] = defaultdict(int)
    for c in cells:
        if c.mode == "naive" and int(c.inflight) <= 8 and (c.runtime, c.handoff) not in naive:
            naive.add((c.runtime, c.handoff))
            picked.append(c)
        elif c.mode == "fixed" and int(c.inflight) <= 8 and fixed[c.runtime] < 2:
            fixed[c.runtime] += 1
            picked.append(c)
    return picked


@dataclass
class Run:
    """One ``ctxdoctor run`` of a cell: its dump, the probe's facts (if on) and the ground truth."""

    cell: Cell
    dump: Path
    facts: Path | None
    seconds: float
    exit_code: int
    problems: list[str] = field(default_factory=list)


def run_cell(cell: corpus.Cell, work: Path, probe: bool, timeout_s: float) -> Run:
    work.mkdir(parents=True, exist_ok=True)
    dump, truth, report = work / "dump.json", work / "truth.jsonl", work / "report.json"
    truth.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CTX_", "CTXDOCTOR_", "GITHUB_"))}
    env.update(cell.env())
    env["CTXDOCTOR_TRUTH"] = str(truth)
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = cell.protocol
    argv = [a.replace("{apps}", str(APPS)).replace("{python}", sys.executable) for a in cell.command()]
    cmd = [sys.executable, "-m", "ctxdoctor", "run", "-o", str(dump), "--report-json", str(report)]
    if not probe:
        cmd.append("--no-probe")
    started = time.monotonic()
    try:
        done = subprocess.run(
            [*cmd, "--", *argv], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s
        )
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = -1
    seconds = time.monotonic() - started
    spans = list(read_paths([dump]).spans) if dump.exists() else []
    records = [json.loads(x) for x in truth.read_text().splitlines() if x.strip()]
    scored = Cell(cell.name, cell.mode, int(cell.inflight), cell.families(), spans, records)
    out = Run(scored, dump, work / "dump.json.probe.jsonl" if probe else None, seconds, code)
    if code == -1:
        out.problems.append(f"timed out after {timeout_s:g} s")
    elif not dump.exists():
        out.problems.append(f"no dump (exit {code})")
    else:
        out.problems += corpus.check_cell(cell, dump, truth)
    return out


def reports(probed: Run, plain: Run) -> dict[str, Report]:
    """The three reports, each diagnosed with ``min_confidence`` 0 (the setting filters them)."""
    loose = Settings(min_confidence=0.0)
    same = diagnose(probed.cell.spans, loose)
    facts = read_facts(probed.facts) if probed.facts is not None else None
    observed = same if facts is None or not facts.units else apply_observations(same, probed.cell.spans, facts)
    return {MODES[0]: observed, MODES[1]: same, MODES[2]: diagnose(plain.cell.spans, loose)}


def seen_by_probe(report: Report) -> tuple[int, int]:
    """Of the observed report's flagged orphans: (seen by the probe, all)."""
    flagged = [o for o in report.orphans if o.confidence >= SETTING.min_confidence]
    return sum(o.observed for o in flagged), len(flagged)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="glob over cell names (repeatable)")
    ap.add_argument("--all", action="store_true", help="every cell of the corpus's design (about 2 h)")
    ap.add_argument("--seed", type=int, default=11, help="seed of the corpus's design")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per run")
    ap.add_argument("--keep", type=Path, help="keep each run's dump, facts and truth under this folder")
    ap.add_argument("--list", action="store_true", help="print the selected cells and stop")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every cell")
    args = ap.parse_args(argv)
    design = corpus.design(args.seed)
    if args.only:
        cells = corpus.select(design, args.only)
    elif args.all:
        cells = design
    else:
        cells = default_selection(design)
    if not cells:
        print("no cell matches", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(c.name for c in cells))
        return 0
    load = os.getloadavg()[0]
    print(f"{len(cells)} cells, each run with and without the probe; load average {load:.2f}", flush=True)
    scores: dict[str, dict[str, Score]] = {m: {} for m in MODES}
    seen = [0, 0]
    per_cell: list[dict[str, Any]] = []
    skipped: list[str] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ctxdoctor-accuracy-observed-") as tmp:
        base = args.keep or Path(tmp)
        for i, c in enumerate(cells, 1):
            probed = run_cell(c, base / c.name / "probe", True, args.timeout)
            plain = run_cell(c, base / c.name / "no-probe", False, args.timeout)
            problems = [f"probe run: {p}" for p in probed.problems] + [f"--no-probe run: {p}" for p in plain.problems]
            took = probed.seconds + plain.seconds
            if problems:
                skipped.append(c.name)
                print(f"[{i}/{len(cells)}] {c.name}: left out: {'; '.join(problems[:3])}", flush=True)
                continue
            reps = reports(probed, plain)
            cell_scores = {
                m: score_report(probed.cell if m != MODES[2] else plain.cell, reps[m], SETTING) for m in MODES
            }
            for m in MODES:
                scores[m][c.name] = cell_scores[m]
            by_probe, flagged = seen_by_probe(reps[MODES[0]])
            seen[0] += by_probe
            seen[1] += flagged
            per_cell.append(
                {
                    "cell": c.name,
                    "seconds": round(took, 2),
                    "observed_flagged": flagged,
                    "observed_by_probe": by_probe,
                    **{
                        m: {"tp": s.tp, "flagged": s.flagged, "truth": s.truth, "parent_ok": s.parent_ok}
                        for m, s in cell_scores.items()
                    },
                }
            )
            line = "  ".join(f"{TAGS[m]} {s.tp}/{s.truth} parent {s.parent_ok}" for m, s in cell_scores.items())
            print(f"[{i}/{len(cells)}] {c.name}: {took:.1f} s  {line}", flush=True)
    elapsed = time.monotonic() - t0

    def pooled(mode: str, names: list[str]) -> Score:
        return total(scores[mode][n] for n in names if n in scores[mode])

    done = [c.name for c in cells if c.name in scores[MODES[0]]]
    groups = {
        "all": done,
        "python": [n for n in done if n.startswith("py-")],
        "node": [n for n in done if n.startswith("node-")],
    }
    if args.verbose:
        print("\nper cell")
        print(HEADER)
        for n in done:
            for m in MODES:
                print(row(f"{n[:25]} {TAGS[m]}", scores[m][n]))
    print(f"\n{HEADER}")
    for g, names in groups.items():
        for m in MODES:
            print(row(f"{g}: {m}", pooled(m, names)))
    print(
        f"\nobserved mode: {seen[0]} of {seen[1]} flagged orphans seen by the probe, "
        f"{seen[1] - seen[0]} from the statistics"
    )
    if skipped:
        print(f"left out (dump and ground truth disagree): {', '.join(skipped)}")
    print(
        f"{len(done)} cells scored in {elapsed:.0f} s; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    if args.json:

        def d(s: Score) -> dict[str, Any]:
            return {
                "cells": s.cells,
                "orphans": s.truth,
                "flagged": s.flagged,
                "precision": s.precision,
                "recall": s.recall,
                "parent": s.parent,
                "confident_wrong": s.confident_wrong,
                "patterns_missed": s.patterns_missed,
                "noisy_quiet_cells": s.quiet_cells_noisy,
                "gate_right": s.gate_right,
            }

        args.json.write_text(
            json.dumps(
                {
                    "setting": SETTING.label(),
                    "pooled": {g: {m: d(pooled(m, names)) for m in MODES} for g, names in groups.items()},
                    "observed_by_probe": seen[0],
                    "observed_flagged": seen[1],
                    "cells": per_cell,
                    "left_out": skipped,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
