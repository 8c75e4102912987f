"""Diagnosis accuracy against the ground truth of the recorded scenarios (fixtures/scenarios/).

    python bench/accuracy.py              # use the recorded dumps
    python bench/accuracy.py --record     # re-record every scenario first (fixtures/record.py)
    python bench/accuracy.py --json out.json
    python bench/accuracy.py --fresh /tmp/fresh   # new recordings, never used for tuning

Prints, per scenario and overall: span-level precision and recall of suspected orphans, the
accuracy of the named likely parent, missing-parent precision/recall and local/remote
classification, whether each expected gap pattern was found and whether any pattern was
reported on a fixed or control scenario; then how confidence relates to being right, per band.
The targets of issue 4 are checked at the end (PASS/FAIL).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxdoctor.diagnose import diagnose  # noqa: E402
from ctxdoctor.diagnose.orphans import find_orphans  # noqa: E402
from ctxdoctor.findings import Settings  # noqa: E402
from ctxdoctor.model import span_hex  # noqa: E402
from ctxdoctor.readers import read_paths  # noqa: E402

SCENARIOS = ROOT / "fixtures" / "scenarios"
BANDS = [(0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01)]


def load(name: str, data: Path = SCENARIOS) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec = json.loads((SCENARIOS / name / "scenario.json").read_text())
    path = data / name / "truth.jsonl"
    truth = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    return spec, truth


def concurrency(spec: dict[str, Any]) -> int:
    env = spec.get("env", {})
    for key in ("CTX_CONCURRENCY", "CTX_CALLERS", "CTX_INFLIGHT"):
        if key in env:
            return int(env[key])
    return 1


def evaluate(name: str, data: Path = SCENARIOS) -> dict[str, Any]:
    """Score one scenario; ``data`` holds its dump and truth (the declaration is always fixtures')."""
    spec, truth = load(name, data)
    dump = read_paths([data / name / "dump.json"])
    t0 = time.perf_counter()
    rep = diagnose(dump.spans, Settings())
    elapsed = time.perf_counter() - t0
    orphans_truth = {t["span_id"]: t for t in truth if t["label"] == "orphan"}
    missing_truth = {t["span_id"]: t for t in truth if t["label"] == "missing_parent"}
    flagged = {span_hex(o.span.span_id): o for o in rep.orphans}
    tp = set(flagged) & set(orphans_truth)
    parent_ok = sum(
        1
        for sid in tp
        if flagged[sid].parent is not None
        and span_hex(flagged[sid].parent.span_id) == (orphans_truth[sid].get("intended_parent") or {}).get("span_id")
    )
    ambiguous_wrong = sum(
        1
        for sid in tp
        if flagged[sid].ambiguous
        and span_hex(flagged[sid].parent.span_id)  # type: ignore[union-attr]
        != (orphans_truth[sid].get("intended_parent") or {}).get("span_id")
    )
    # Confidence bands over every candidate root (flagged or not), so low bands are populated.
    candidates, _ = find_orphans(dump.spans)
    bands = []
    for o in candidates:
        bands.append((o.confidence, span_hex(o.span.span_id) in orphans_truth))
    lost_found = {span_hex(m.span.span_id): m for m in rep.missing_parents if m.lost}
    all_missing = {span_hex(m.span.span_id): m for m in rep.missing_parents}
    mp_truth_lost = {sid for sid, t in missing_truth.items()}
    mp_class_ok = sum(
        1
        for sid, t in missing_truth.items()
        if sid in all_missing
        and (t.get("parent_remote") is None or all_missing[sid].parent_remote == t["parent_remote"])
    )
    expected = {(g["parent_name"], g["orphan_name"], g["boundary"]) for g in spec.get("expect_gaps", [])}
    reported = {(g.parent_name, g.orphan_name, g.boundary.value) for g in rep.gaps}
    return {
        "name": name,
        "kind": spec["kind"],
        "runtime": spec["runtime"],
        "concurrency": concurrency(spec),
        "spans": rep.summary.spans,
        "truth_orphans": len(orphans_truth),
        "flagged": len(flagged),
        "tp": len(tp),
        "fp": len(set(flagged) - set(orphans_truth)),
        "fn": len(set(orphans_truth) - set(flagged)),
        "parent_ok": parent_ok,
        "ambiguous_wrong": ambiguous_wrong,
        "mp_truth": len(missing_truth),
        "mp_found": len(set(missing_truth) & set(all_missing)),
        "mp_class_ok": mp_class_ok,
        "mp_lost_reported": len(lost_found),
        "mp_lost_truth": len(mp_truth_lost),
        "mp_lost_fp": len(set(lost_found) - set(missing_truth)),
        "gaps_expected": sorted(expected),
        "gaps_missing": sorted(expected - reported),
        "gaps_unexpected": sorted(reported - expected),
        "bands": bands,
        "seconds": elapsed,
    }


def ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def fmt(x: float | None) -> str:
    return "   - " if x is None else f"{x:5.2f}"


def pooled(rows: list[dict[str, Any]], pred: Any) -> dict[str, Any]:
    sel = [r for r in rows if pred(r)]
    tp = sum(r["tp"] for r in sel)
    return {
        "precision": ratio(tp, sum(r["flagged"] for r in sel)),
        "recall": ratio(tp, sum(r["truth_orphans"] for r in sel)),
        "parent_accuracy": ratio(sum(r["parent_ok"] for r in sel), tp),
        "scenarios": len(sel),
    }


def pooled_groups(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        "overall": pooled(rows, lambda r: True),
        "concurrency <= 8": pooled(rows, lambda r: r["concurrency"] <= 8),
        "concurrency >= 32": pooled(rows, lambda r: r["concurrency"] >= 32),
    }


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The targets of issue 4, each PASS/FAIL over these scenarios."""
    groups = pooled_groups(rows)
    c8, c32 = groups["concurrency <= 8"], groups["concurrency >= 32"]

    def at_least(x: float | None, bar: float) -> bool:
        return x is not None and x >= bar

    mp_ok = sum(r["mp_class_ok"] for r in rows)
    mp_truth = sum(r["mp_truth"] for r in rows)
    return [
        (
            "every naive gap pattern reported, none extra",
            all(not r["gaps_missing"] and not r["gaps_unexpected"] for r in rows if r["kind"] == "naive"),
        ),
        (
            "no gap pattern on any fixed or control scenario",
            all(not r["gaps_unexpected"] for r in rows if r["kind"] != "naive"),
        ),
        ("concurrency <= 8: precision >= 0.98", at_least(c8["precision"], 0.98)),
        ("concurrency <= 8: recall >= 0.95", at_least(c8["recall"], 0.95)),
        ("concurrency <= 8: likely-parent accuracy >= 0.90", at_least(c8["parent_accuracy"], 0.90)),
        ("concurrency >= 32: precision >= 0.95", c32["scenarios"] == 0 or at_least(c32["precision"], 0.95)),
        ("concurrency >= 32: recall >= 0.90", c32["scenarios"] == 0 or at_least(c32["recall"], 0.90)),
        ("missing parents: local/remote right on every labelled case", mp_ok == mp_truth),
    ]


def recorded() -> list[str]:
    return sorted(p.parent.name for p in SCENARIOS.glob("*/scenario.json") if (p.parent / "dump.json").exists())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="scenarios (default: all recorded)")
    ap.add_argument("--record", action="store_true", help="re-record the scenarios first")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--fresh",
        type=Path,
        metavar="DIR",
        help="record every scenario anew into DIR and score those runs (held out from any tuning)",
    )
    args = ap.parse_args()
    names = args.names or recorded()
    data = SCENARIOS
    if args.record:
        subprocess.run([sys.executable, str(ROOT / "fixtures" / "record.py"), *names], check=True)
    if args.fresh:
        subprocess.run(
            [sys.executable, str(ROOT / "fixtures" / "record.py"), "--out", str(args.fresh), *names], check=True
        )
        data = args.fresh
    rows = [evaluate(n, data) for n in names]
    print(
        f"{'scenario':38} {'kind':7} {'c':>3} {'spans':>6} {'orph':>5} {'prec':>5} {'rec':>5} {'par':>5} "
        f"{'mp':>3} {'mpOK':>4} gaps"
    )
    for r in rows:
        prec = ratio(r["tp"], r["flagged"]) if r["flagged"] else (None if not r["truth_orphans"] else 0.0)
        rec = ratio(r["tp"], r["truth_orphans"])
        par = ratio(r["parent_ok"], r["tp"])
        if r["kind"] == "naive":
            gaps = (
                "ok"
                if not r["gaps_missing"] and not r["gaps_unexpected"]
                else (f"MISSING {r['gaps_missing']} EXTRA {r['gaps_unexpected']}")
            )
        else:
            gaps = "quiet" if not r["gaps_unexpected"] else f"NOT QUIET {r['gaps_unexpected']}"
        print(
            f"{r['name']:38} {r['kind']:7} {r['concurrency']:>3} {r['spans']:>6} {r['truth_orphans']:>5} "
            f"{fmt(prec)} {fmt(rec)} {fmt(par)} {r['mp_truth']:>3} {r['mp_class_ok']:>4} {gaps}"
        )

    groups = pooled_groups(rows)
    print()
    for label, g in groups.items():
        print(
            f"{label:18} precision {fmt(g['precision'])}  recall {fmt(g['recall'])}  "
            f"likely-parent accuracy {fmt(g['parent_accuracy'])}  ({g['scenarios']} scenarios)"
        )
    mp_truth = sum(r["mp_truth"] for r in rows)
    mp_found = sum(r["mp_found"] for r in rows)
    mp_ok = sum(r["mp_class_ok"] for r in rows)
    lost_fp = sum(r["mp_lost_fp"] for r in rows)
    print(
        f"missing parents: {mp_found}/{mp_truth} labelled found, local/remote right on {mp_ok}/{mp_truth}, "
        f"{lost_fp} unlabelled spans reported as lost"
    )
    wrong = sum(r["tp"] - r["parent_ok"] for r in rows)
    flagged_ambiguous = sum(r["ambiguous_wrong"] for r in rows)
    print(f"wrong likely parents: {wrong}, of which marked ambiguous (parent confidence < 0.5): {flagged_ambiguous}")

    print("\nconfidence band   roots  orphans  share right")
    band_rows: dict[tuple[float, float], list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        for conf, right in r["bands"]:
            for lo, hi in BANDS:
                if lo <= conf < hi:
                    band_rows[(lo, hi)][0] += 1
                    band_rows[(lo, hi)][1] += int(right)
    for lo, hi in BANDS:
        n, k = band_rows[(lo, hi)]
        print(f"[{lo:.1f}, {min(hi, 1.0):.1f}){'':7} {n:>6} {k:>8}  {fmt(ratio(k, n))}")
    results = targets(rows)
    print()
    for label, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    if args.json:
        for r in rows:
            r.pop("bands")
        args.json.write_text(json.dumps({"scenarios": rows, "groups": groups}, indent=2))
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
