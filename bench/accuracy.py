"""Diagnosis accuracy, in-sample and held out by family, against the apps' own ground truth.

    python bench/corpus.py                    # record the structure-varying corpus (once, cached)
    python bench/accuracy.py                  # score it: per family, in-sample and held out
    python bench/accuracy.py --fixtures       # also score the hand-written fixture scenarios
    python bench/accuracy.py --json out.json

A *cell* is one recorded run (bench/corpus.py); a *family* is one value of one axis
(``dispatcher=root``, ``handoff=process_pool``, ``inflight=32``...). What the diagnosis may be
tuned on is the small grid ``GRID`` of decision settings (report threshold, ambiguity threshold)
and model switches (``ModelParams``). **Leave one family out**: for every family F, the setting
is chosen on the cells outside F and the figures are those of the cells inside F. An axis's
pooled held-out figures add up its families' held-out figures, so every cell is scored once per
axis by a setting that never saw a cell of its family. In-sample figures use the setting chosen
on everything.

Printed per family and pooled (by "about 8 in flight" = at most 8, and 32): span-level precision
and recall of suspected orphans, right parent among those found, parents reported as confident
(not ambiguous) and wrong, gap patterns missed on naive cells and reported on fixed ones, and
``check --max-orphan-ratio 0.05`` verdicts; then confidence bands. The targets are checked last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxdoctor.diagnose import diagnose  # noqa: E402
from ctxdoctor.diagnose.orphans import ModelParams, shape  # noqa: E402
from ctxdoctor.findings import AMBIGUOUS_BELOW, Report, Settings  # noqa: E402
from ctxdoctor.model import Span, span_hex  # noqa: E402
from ctxdoctor.readers import read_paths  # noqa: E402

CACHE = ROOT / "bench" / ".cache" / "corpus"
SCENARIOS = ROOT / "fixtures" / "scenarios"
BANDS = [(0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01)]
GATE = 0.05


@dataclass(frozen=True)
class Setting:
    """One point of the tuning grid: what a fold may choose."""

    min_confidence: float
    ambiguous_below: float
    model: ModelParams

    def label(self) -> str:
        return f"min_conf={self.min_confidence} ambiguous<{self.ambiguous_below} {self.model.describe()}"


def _distance(a: Setting, b: Setting) -> int:
    """How many of the grid's choices two settings make differently."""
    fields = ("worker_unit_prior", "periodic_cv", "count_balance", "group_share_cap", "shared_values", "group_test")
    differ = sum(getattr(a.model, f) != getattr(b.model, f) for f in fields)
    return differ + (a.min_confidence != b.min_confidence) + (a.ambiguous_below != b.ambiguous_below)


def grid() -> list[Setting]:
    models = ModelParams.variants()
    return [
        Setting(mc, ab, m)
        for m in models
        for mc in (0.5, 0.7, 0.85)
        for ab in (0.5, 0.7, 0.9)
    ]


@dataclass
class Cell:
    name: str
    kind: str  # naive | fixed | control
    inflight: int
    families: list[str]
    spans: list[Span]
    truth: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


@dataclass
class Score:
    """Counts for one cell under one setting; they add up across cells."""

    cells: int = 0
    truth: int = 0
    flagged: int = 0
    tp: int = 0
    parent_ok: int = 0
    confident: int = 0  # found, parent reported as not ambiguous
    confident_wrong: int = 0
    patterns_expected: int = 0
    patterns_missed: int = 0
    patterns_false: int = 0  # reported on a fixed/control cell, or not in a naive cell's truth
    quiet_cells: int = 0
    quiet_cells_noisy: int = 0
    gate_right: int = 0
    bands: list[tuple[float, bool]] = field(default_factory=list)

    def add(self, o: Score) -> None:
        for k, v in vars(o).items():
            if k == "bands":
                self.bands.extend(v)
            else:
                setattr(self, k, getattr(self, k) + v)

    @property
    def precision(self) -> float | None:
        return self.tp / self.flagged if self.flagged else (None if not self.truth else 0.0)

    @property
    def recall(self) -> float | None:
        return self.tp / self.truth if self.truth else None

    @property
    def parent(self) -> float | None:
        return self.parent_ok / self.tp if self.tp else None

    @property
    def confident_right(self) -> float | None:
        return 1 - self.confident_wrong / self.confident if self.confident else None

    def objective(self) -> float:
        """What a fold maximises: found and right, with false alarms costing more than misses."""
        p, r, a = self.precision or 0.0, self.recall or 0.0, self.parent or 0.0
        c = self.confident_right if self.confident_right is not None else 1.0
        noisy = self.quiet_cells_noisy / self.quiet_cells if self.quiet_cells else 0.0
        return r + 2 * p + a + 2 * c - 3 * noisy


def load_cells(
    include_corpus: bool = True,
    include_fixtures: bool = False,
    only: str | None = None,
    cache: Path = CACHE,
    since: float = 0.0,
) -> list[Cell]:
    cells: list[Cell] = []
    if include_corpus:
        for meta_path in sorted(cache.glob("*/cell.json")):
            if meta_path.stat().st_mtime < since:
                continue
            meta = json.loads(meta_path.read_text())
            if only and only not in meta["name"]:
                continue
            folder = meta_path.parent
            dump = read_paths([folder / "dump.json"])
            truth = [json.loads(x) for x in (folder / "truth.jsonl").read_text().splitlines() if x.strip()]
            cells.append(Cell(meta["name"], meta["mode"], int(meta["inflight"]), meta["families"],
                              list(dump.spans), truth))
    if include_fixtures:
        for spec_path in sorted(SCENARIOS.glob("*/scenario.json")):
            folder = spec_path.parent
            if not (folder / "dump.json").exists():
                continue
            spec = json.loads(spec_path.read_text())
            env = spec.get("env", {})
            inflight = next((int(env[k]) for k in ("CTX_CONCURRENCY", "CTX_CALLERS", "CTX_INFLIGHT") if k in env), 1)
            truth = [json.loads(x) for x in (folder / "truth.jsonl").read_text().splitlines() if x.strip()]
            mode = "naive" if spec["kind"] == "naive" else "fixed"
            fams = ["suite=fixtures", f"runtime={spec['runtime']}", f"mode={mode}"]
            cells.append(Cell(folder.name, spec["kind"], inflight, fams, list(read_paths([folder / "dump.json"]).spans),
                              truth))
    return cells


_REPORTS: dict[tuple[int, ModelParams], Report] = {}


def _report(cell: Cell, model: ModelParams) -> Report:
    """One diagnosis per cell and model; the decision thresholds only filter its findings."""
    key = (id(cell), model)
    if key not in _REPORTS:
        _REPORTS[key] = diagnose(cell.spans, Settings(min_confidence=0.0), model=model)
    return _REPORTS[key]


def score(cell: Cell, setting: Setting) -> Score:
    return score_report(cell, _report(cell, setting.model), setting)


def score_report(cell: Cell, rep: Report, setting: Setting) -> Score:
    """The counts for one cell's report (diagnosed with ``min_confidence`` 0: the setting filters)."""
    orphans_truth = {t["span_id"]: t for t in cell.truth if t["label"] == "orphan"}
    s = Score(cells=1, truth=len(orphans_truth))
    s.bands = [(o.confidence, span_hex(o.span.span_id) in orphans_truth) for o in rep.orphans]
    flagged = {span_hex(o.span.span_id): o for o in rep.orphans if o.confidence >= setting.min_confidence}
    s.flagged = len(flagged)
    for sid, o in flagged.items():
        t = orphans_truth.get(sid)
        if t is None:
            continue
        s.tp += 1
        right = o.parent is not None and span_hex(o.parent.span_id) == (t.get("intended_parent") or {}).get("span_id")
        s.parent_ok += right
        if o.parent_confidence >= setting.ambiguous_below:
            s.confident += 1
            s.confident_wrong += not right
    # Patterns: (parent name, orphan name) of the flagged orphans by shape, as the gaps group
    # them: a test case per item ("handles item 7") is one place in the code.
    reported = {(shape(o.parent.name), shape(o.span.name)) for o in flagged.values() if o.parent is not None}
    expected = {
        (shape(str((t.get("intended_parent") or {}).get("name"))), shape(t["name"])) for t in orphans_truth.values()
    }
    if cell.kind == "naive":
        s.patterns_expected = len(expected)
        s.patterns_missed = len(expected - reported)
        s.patterns_false = len(reported - expected)
    else:
        s.quiet_cells = 1
        s.quiet_cells_noisy = int(bool(reported))
        s.patterns_false = len(reported)
    # check --max-orphan-ratio 0.05 with this setting's threshold.
    fragments = rep.summary.fragments
    broken = len(flagged) + rep.summary.lost_parents
    failed = fragments == 0 or broken / fragments > GATE
    s.gate_right = int(failed == (cell.kind == "naive"))
    return s


def total(scores: Iterable[Score]) -> Score:
    out = Score()
    for s in scores:
        out.add(s)
    return out


def fmt(x: float | None, w: int = 5) -> str:
    return f"{'-':>{w}}" if x is None else f"{x:{w}.2f}"


def row(label: str, s: Score) -> str:
    return (
        f"{label:34} {s.cells:>4} {s.truth:>5} {fmt(s.precision)} {fmt(s.recall)} {fmt(s.parent)} "
        f"{s.confident_wrong:>4}/{s.confident:<4} {s.patterns_missed:>3}/{s.patterns_expected:<3} "
        f"{s.quiet_cells_noisy:>3}/{s.quiet_cells:<3} {s.gate_right:>3}/{s.cells:<3}"
    )


HEADER = (
    f"{'family':34} {'cells':>4} {'orph':>5} {'prec':>5} {'rec':>5} {'par':>5} {'confWrong':>9} "
    f"{'missed':>7} {'noisy':>7} {'gate':>7}"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", action="store_true", help="also score fixtures/scenarios (as family suite=fixtures)")
    ap.add_argument("--no-corpus", action="store_true", help="score only the fixture scenarios")
    ap.add_argument("--only", help="cells whose name contains this")
    ap.add_argument("--default-only", action="store_true", help="no tuning: score the shipped defaults only")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every cell")
    ap.add_argument("--cache", type=Path, default=CACHE, help="the recorded corpus (default: bench/.cache/corpus)")
    ap.add_argument("--since", type=float, default=0.0, help="only cells recorded after this Unix time")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cells = load_cells(not args.no_corpus, args.fixtures or args.no_corpus, args.only, args.cache, args.since)
    if not cells:
        print("no cells: record the corpus first (python bench/corpus.py)", file=sys.stderr)
        return 2
    settings = [Setting(Settings().min_confidence, AMBIGUOUS_BELOW, ModelParams())] if args.default_only else grid()
    # Every cell under every setting, once.
    table: list[list[Score]] = [[score(c, st) for st in settings] for c in cells]
    read_s = time.perf_counter() - t0

    shipped = Setting(Settings().min_confidence, AMBIGUOUS_BELOW, ModelParams())

    def best(index: list[int]) -> int:
        # Settings that score alike on the cells looked at are told apart by how close they are to
        # the shipped defaults (the prior): evidence that the training cells cannot show (ids
        # shared, where no training cell shares one) is then kept, not dropped by grid order.
        return max(
            range(len(settings)),
            key=lambda k: (total(table[i][k] for i in index).objective(), -_distance(settings[k], shipped)),
        )

    everyone = list(range(len(cells)))
    k_all = best(everyone)
    families: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cells):
        for f in c.families:
            families[f].append(i)
    axes: dict[str, list[str]] = defaultdict(list)
    for f in families:
        axes[f.split("=")[0]].append(f)

    held: dict[str, Score] = {}
    chosen: dict[str, str] = {}
    for f, members in sorted(families.items()):
        inside = set(members)
        k = best([i for i in everyone if i not in inside])
        chosen[f] = settings[k].label()
        held[f] = total(table[i][k] for i in members)

    if args.verbose:
        print("cell (in-sample setting)")
        print(HEADER)
        for i, c in enumerate(cells):
            print(row(c.name[:34], table[i][k_all]))
        print()
    print(f"in-sample setting (chosen on all {len(cells)} cells): {settings[k_all].label()}")
    print("\nLeave-one-family-out: each family scored with the setting chosen without it")
    print(HEADER)
    for axis in sorted(axes):
        for f in sorted(axes[axis]):
            print(row(f, held[f]))
        print(row(f"  {axis}: pooled held-out", total(held[f] for f in axes[axis])))
    print("\nIn-sample, by family")
    print(HEADER)
    for f in sorted(families):
        print(row(f, total(table[i][k_all] for i in families[f])))

    def pooled(pred: Callable[[Cell], bool], k_of: Callable[[int], int]) -> Score:
        return total(table[i][k_of(i)] for i in everyone if pred(cells[i]))

    # Held-out pooled for the concurrency split: each cell scored by the setting chosen without
    # its own inflight family (the axis the split is about).
    def k_heldout(i: int) -> int:
        fam = next((f for f in cells[i].families if f.startswith("inflight=")), None)
        if fam is None:
            return k_all
        inside = set(families[fam])
        return best([j for j in everyone if j not in inside])

    cache_k: dict[int, int] = {}

    def k_held(i: int) -> int:
        if i not in cache_k:
            cache_k[i] = k_heldout(i)
        return cache_k[i]

    low = pooled(lambda c: c.inflight <= 8, k_held)
    high = pooled(lambda c: c.inflight >= 32, k_held)
    print("\nPooled, held out (setting chosen without the cell's in-flight family)")
    print(HEADER)
    print(row("about 8 in flight (<= 8)", low))
    print(row("32 in flight", high))
    print(row("all", total([low, high])))
    allsc = total(held[f] for f in axes.get("dispatcher", []))
    print("\nconfidence band   roots  orphans  share right (in-sample setting)")
    bands = [x for i in everyone for x in table[i][k_all].bands]
    for lo, hi in BANDS:
        sel = [r for c, r in bands if lo <= c < hi]
        share = fmt(sum(sel) / len(sel) if sel else None)
        print(f"[{lo:.1f}, {min(hi, 1.0):.1f})        {len(sel):>6} {sum(sel):>8}  {share}")

    def at_least(x: float | None, bar: float) -> bool:
        return x is not None and x >= bar

    worst_axis = {a: total(held[f] for f in fs) for a, fs in axes.items()}
    results = [
        ("<= 8 in flight, held out: precision >= 0.98", at_least(low.precision, 0.98)),
        ("<= 8 in flight, held out: recall >= 0.95", at_least(low.recall, 0.95)),
        ("<= 8 in flight, held out: right parent >= 0.90", at_least(low.parent, 0.90)),
        ("32 in flight, held out: precision >= 0.95", high.cells == 0 or at_least(high.precision, 0.95)),
        ("32 in flight, held out: recall >= 0.90", high.cells == 0 or at_least(high.recall, 0.90)),
        ("32 in flight, held out: right parent >= 0.75", high.cells == 0 or at_least(high.parent, 0.75)),
        ("32 in flight, held out: every wrong parent flagged ambiguous", high.confident_wrong == 0),
        ("confident parents right >= 0.95 in every axis's held-out pool",
         all(s.confident_right is None or s.confident_right >= 0.95 for s in worst_axis.values())),
        ("every naive pattern found (dispatcher axis, held out)", allsc.patterns_missed == 0),
        ("no pattern on any fixed/control cell (dispatcher axis, held out)", allsc.quiet_cells_noisy == 0),
        ("check at 0.05 right on every cell (dispatcher axis, held out)", allsc.gate_right == allsc.cells),
    ]
    print()
    for label, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    print(f"\n{len(cells)} cells, {len(settings)} settings, {read_s:.1f} s")
    if args.json:
        def d(s: Score) -> dict[str, Any]:
            return {"cells": s.cells, "orphans": s.truth, "precision": s.precision, "recall": s.recall,
                    "parent": s.parent, "confident": s.confident, "confident_wrong": s.confident_wrong,
                    "patterns_missed": s.patterns_missed, "patterns_expected": s.patterns_expected,
                    "noisy_quiet_cells": s.quiet_cells_noisy, "quiet_cells": s.quiet_cells,
                    "gate_right": s.gate_right}
        args.json.write_text(json.dumps({
            "in_sample_setting": settings[k_all].label(),
            "held_out": {f: {**d(held[f]), "setting": chosen[f]} for f in held},
            "in_sample": {f: d(total(table[i][k_all] for i in fs)) for f, fs in families.items()},
            "pooled_held_out": {"le8": d(low), "c32": d(high)},
            "targets": dict(results),
        }, indent=1))
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
