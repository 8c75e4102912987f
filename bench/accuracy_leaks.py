"""Accuracy of the context-leak and silent-dispatch findings, with a held-out discipline.

    python bench/accuracy_leaks.py                  # record the corpus if missing, then score
    python bench/accuracy_leaks.py --record         # re-record the whole corpus first
    python bench/accuracy_leaks.py --data fixtures/leaks   # score the committed subset only
    python bench/accuracy_leaks.py --json out.json

The corpus (fixtures/leaks_corpus.py) is a matrix of real-app runs; a *family* is one value of
one axis (``mechanism=interval``, ``entry=consumer``, ``load=high``...). Tuned: each finding's
reporting threshold (THRESHOLDS) and, for leaks, ``spread_ratio`` (SPREADS): the values with the
best recall among those keeping precision >= TUNE_PRECISION on the runs the tuning may see; of
several such, the middle one (the widest margin on both sides). For each family the threshold is tuned on the runs
*outside* it and the family is scored with it (leave one family out); the pooled held-out
figures add up, per axis, the scores of every family held out in turn. In-sample figures (tuned
and scored on everything) are printed next to them.

Scored: leaked spans (span-level precision and recall; the likely parent's accuracy on the true
positives), silent dispatches (dispatch-level precision and recall), and any finding at all on a
fixed or control run. The targets are checked at the end (PASS/FAIL).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxdoctor.diagnose.leaks import LeakParams, find_leaks  # noqa: E402
from ctxdoctor.diagnose.silent import SilentParams, find_silent_dispatches  # noqa: E402
from ctxdoctor.model import span_hex  # noqa: E402
from ctxdoctor.readers import read_paths  # noqa: E402

CACHE = ROOT / "bench" / ".cache" / "leaks"
#: Thresholds the tuning may pick from (confidence at which a finding is reported).
THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9)
#: Values of LeakParams.spread_ratio the leak tuning may pick from (with a threshold).
SPREADS = (2.0, 4.0, 8.0, 16.0, 32.0)
LEAK_GRID = tuple((t, r) for t in THRESHOLDS for r in SPREADS)
#: Precision the tuning must keep on the runs it sees.
TUNE_PRECISION = 0.97
TARGETS = {"leak_precision": 0.95, "leak_recall": 0.90, "silent_precision": 0.95}


def _corpus() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ctxdoctor_leaks_corpus", ROOT / "fixtures" / "leaks_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Run:
    """One recorded case: its truth and, per threshold, what the diagnosis reported."""

    def __init__(self, case: Any, folder: Path, corpus: ModuleType) -> None:
        self.case = case
        spans = read_paths([folder / "dump.json"]).spans
        truth = corpus.read_truth(folder / "truth.jsonl")
        present = {span_hex(s.span_id) for s in spans}
        self.leaks = {r["span_id"]: r for r in truth if r["label"] == "leak"}
        self.silent = corpus.silent_dispatches(truth, present)
        self.dispatches = {r["span_id"] for r in truth if r["label"] == "dispatch"}
        self.found_leaks = {
            (t, r): {span_hex(lk.span.span_id): lk for lk in find_leaks(spans, LeakParams(threshold=t, spread_ratio=r))}
            for t, r in LEAK_GRID
        }
        self.found_silent = {
            t: {span_hex(d.span.span_id) for d in find_silent_dispatches(spans, SilentParams(threshold=t))}
            for t in THRESHOLDS
        }

    def leak_counts(self, t: Any) -> tuple[int, int, int, int]:
        """(true positives, false positives, false negatives, likely parents right among the TP)."""
        found = self.found_leaks[t]
        tp = [s for s in found if s in self.leaks]
        right = 0
        for s in tp:
            want = self.leaks[s].get("intended_parent")
            got = found[s].likely_parent
            right += (want is None and got is None) or (
                want is not None and got is not None and span_hex(got.span_id) == want["span_id"]
            )
        return len(tp), len(found) - len(tp), len(self.leaks) - len(tp), right

    def silent_counts(self, t: Any) -> tuple[int, int, int]:
        found = self.found_silent[t]
        tp = len(found & self.silent)
        return tp, len(found) - tp, len(self.silent) - tp

    def quiet_violation(self, t_leak: Any, t_silent: float) -> bool:
        return self.case.kind != "naive" and bool(self.found_leaks[t_leak] or self.found_silent[t_silent])


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _tune(runs: Iterable[Run], counts: Callable[[Run, Any], tuple[int, ...]], grid: tuple[Any, ...]) -> Any:
    """The best recall among the settings keeping precision >= TUNE_PRECISION; of ties, the middle
    one (the widest margin either way). The most conservative setting when none keeps it."""
    runs = list(runs)
    scored = []
    for g in grid:
        tp = sum(counts(r, g)[0] for r in runs)
        fp = sum(counts(r, g)[1] for r in runs)
        if tp + fp == 0 or tp / (tp + fp) >= TUNE_PRECISION:
            scored.append((tp, g))
    if not scored:
        return grid[-1]
    best = max(tp for tp, _ in scored)
    ties = [g for tp, g in scored if tp == best]
    if not isinstance(ties[0], tuple):
        return ties[len(ties) // 2]
    # Per parameter, the middle of the values that tie; that combination if it ties too.
    middle = tuple(sorted({g[i] for g in ties})[len({g[i] for g in ties}) // 2] for i in range(len(ties[0])))
    return middle if middle in ties else ties[len(ties) // 2]


def score(runs: list[Run], t_leak: Any, t_silent: float) -> dict[str, Any]:
    lk = [r.leak_counts(t_leak) for r in runs]
    sd = [r.silent_counts(t_silent) for r in runs]
    tp, fp, fn, right = (sum(x[i] for x in lk) for i in range(4))
    stp, sfp, sfn = (sum(x[i] for x in sd) for i in range(3))
    return {
        "runs": len(runs),
        "leak_tp": tp,
        "leak_fp": fp,
        "leak_fn": fn,
        "leak_precision": _ratio(tp, tp + fp),
        "leak_recall": _ratio(tp, tp + fn),
        "likely_parent_accuracy": _ratio(right, tp),
        "silent_tp": stp,
        "silent_fp": sfp,
        "silent_fn": sfn,
        "silent_precision": _ratio(stp, stp + sfp),
        "silent_recall": _ratio(stp, stp + sfn),
        "quiet_violations": [r.case.name for r in runs if r.quiet_violation(t_leak, t_silent)],
        "t_leak": t_leak,
        "t_silent": t_silent,
    }


def held_out(runs: list[Run]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per family and pooled per axis: tuned on the other runs, scored on the family's."""
    families: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        for fam in r.case.families():
            families[fam].append(r)
    per_family: dict[str, dict[str, Any]] = {}
    pooled_parts: dict[str, list[tuple[list[Run], Any, float]]] = defaultdict(list)
    for fam, members in sorted(families.items()):
        rest = [r for r in runs if r not in members]
        t_leak = _tune(rest, Run.leak_counts, LEAK_GRID)
        t_silent = _tune(rest, Run.silent_counts, THRESHOLDS)
        per_family[fam] = score(members, t_leak, t_silent)
        pooled_parts[fam.split("=")[0]].append((members, t_leak, t_silent))
    pooled: dict[str, dict[str, Any]] = {}
    for axis, parts in pooled_parts.items():
        scores = [score(m, a, b) for m, a, b in parts]
        total = {
            k: sum(s[k] for s in scores)
            for k in ("leak_tp", "leak_fp", "leak_fn", "silent_tp", "silent_fp", "silent_fn")
        }
        right = sum(sum(r.leak_counts(a)[3] for r in m) for m, a, _ in parts)
        pooled[axis] = {
            **total,
            "leak_precision": _ratio(total["leak_tp"], total["leak_tp"] + total["leak_fp"]),
            "leak_recall": _ratio(total["leak_tp"], total["leak_tp"] + total["leak_fn"]),
            "likely_parent_accuracy": _ratio(right, total["leak_tp"]),
            "silent_precision": _ratio(total["silent_tp"], total["silent_tp"] + total["silent_fp"]),
            "silent_recall": _ratio(total["silent_tp"], total["silent_tp"] + total["silent_fn"]),
            "quiet_violations": sorted({n for s in scores for n in s["quiet_violations"]}),
        }
    return per_family, pooled


def _f(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def _line(label: str, s: dict[str, Any]) -> str:
    return (
        f"{label:28} leaks P {_f(s['leak_precision'])} R {_f(s['leak_recall'])} "
        f"(tp {s['leak_tp']} fp {s['leak_fp']} fn {s['leak_fn']}) parent {_f(s['likely_parent_accuracy'])} | "
        f"silent P {_f(s['silent_precision'])} R {_f(s['silent_recall'])} "
        f"(tp {s['silent_tp']} fp {s['silent_fp']} fn {s['silent_fn']})"
        + (f" | QUIET VIOLATIONS {s['quiet_violations']}" if s["quiet_violations"] else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/accuracy_leaks.py", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=CACHE, help=f"recorded runs (default {CACHE})")
    parser.add_argument("--record", action="store_true", help="re-record every case into --data first")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    corpus = _corpus()
    every = corpus.cases()
    if args.record or (args.data == CACHE and any(not (CACHE / c.name / "dump.json").exists() for c in every)):
        todo = every if args.record else [c for c in every if not (CACHE / c.name / "dump.json").exists()]
        print(f"recording {len(todo)} runs into {args.data} ...", flush=True)
        for c in todo:
            try:
                corpus.record(c, args.data / c.name)
            except Exception as exc:  # reported; the scoring uses what was recorded
                print(f"  FAILED {c.name}: {exc}", file=sys.stderr, flush=True)
    runs = [Run(c, args.data / c.name, corpus) for c in every if (args.data / c.name / "dump.json").exists()]
    if not runs:
        print("no recorded runs", file=sys.stderr)
        return 2
    print(
        f"{len(runs)} runs: {sum(r.case.kind == 'naive' for r in runs)} naive, "
        f"{sum(r.case.kind != 'naive' for r in runs)} fixed or control\n"
    )
    print("per run (defaults: thresholds 0.5, spread_ratio as in LeakParams):")
    for r in runs:
        print("  " + _line(r.case.name, score([r], (0.5, LeakParams().spread_ratio), 0.5)))
    t_leak = _tune(runs, Run.leak_counts, LEAK_GRID)
    t_silent = _tune(runs, Run.silent_counts, THRESHOLDS)
    insample = score(runs, t_leak, t_silent)
    per_family, pooled = held_out(runs)
    print(f"\nin-sample (tuned on all runs: leak (threshold, spread_ratio) {t_leak}, silent threshold {t_silent}):")
    print("  " + _line("all runs", insample))
    print("\nheld out, per family [leak threshold/spread_ratio/silent threshold tuned on the other families' runs]:")
    for fam, s in per_family.items():
        t, r = s["t_leak"]
        print("  " + _line(f"{fam} [{t}/{r:g}/{s['t_silent']}]", s))
    print("\nheld out, pooled per axis (every family of the axis held out in turn):")
    for axis, s in pooled.items():
        print("  " + _line(axis, s))
    ok = True
    print("\ntargets (held out, every family):")
    for key, target in TARGETS.items():
        values = [s[key] for s in per_family.values() if s[key] is not None]
        worst = min(values) if values else None
        good = worst is not None and worst >= target
        ok &= good
        print(f"  {key} >= {target}: worst family {_f(worst)}  {'PASS' if good else 'FAIL'}")
    quiet = sorted({n for s in per_family.values() for n in s["quiet_violations"]})
    print(f"  no finding on a fixed or control run: {'PASS' if not quiet else 'FAIL ' + ', '.join(quiet)}")
    ok &= not quiet
    if args.json:
        args.json.write_text(
            json.dumps({"in_sample": insample, "per_family": per_family, "pooled": pooled}, indent=2) + "\n"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
