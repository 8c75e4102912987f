"""Regression gate: a fixed subset of the structure-varying corpus, recorded from real SDKs.

``bench/corpus.py`` records the matrix apps over a design that varies where the dispatcher sits,
how work is handed over and waited for, load and background jobs; ``bench/accuracy.py`` scores
the whole corpus, held out by family. These cells are copied into ``fixtures/corpus/`` so that
the suite holds the diagnosis to them on every change: dispatchers that are roots, test cases
and queue consumers as well as request handlers, and quiet fixed runs including a saturated
server with a timer job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctxdoctor.analysis import analyze_paths
from ctxdoctor.diagnose.orphans import shape
from ctxdoctor.findings import Settings
from ctxdoctor.model import span_hex
from tests.helpers import ROOT

CORPUS = ROOT / "fixtures" / "corpus"
CELLS = sorted(p.name for p in CORPUS.iterdir() if (p / "cell.json").exists())
NAIVE = [c for c in CELLS if c.endswith(tuple(f"-naive-s{i}" for i in range(1000)))]
FIXED = [c for c in CELLS if c not in NAIVE]
#: Naive cells whose recall is below the bar at the shipped threshold, kept as strict expected
#: failures so that a fix shows. Two: one dispatcher at a time feeding a process pool, its span
#: active about 99% of the time, so that some roots' timing beats no more jittered copies than
#: chance and the group's estimated share of chance roots caps the others below the threshold.
#: One: 32 requests at once, each awaiting a process-pool job, every root inside every busy
#: request; neither timing nor the counts (equal under every request, like a timer's ticks
#: under long overlapping spans) can tell, so count balance declines (docs/diagnosis.md 5b). None
#: shares an id between the dispatcher and the work (the same shapes with one are found by it).
#: Their gap pattern and the gate's verdict are still required where they hold
#: (``test_naive_cells_fail_the_gate``).
LOW_RECALL = {
    "node-root-process_pool-fanout-c1-none-idle-a0-naive-s71",
    "node-server-process_pool-await-c32-none-idle-a0-naive-s96",
    "py-test-process_pool-await-c1-none-idle-a0-naive-s8",
}
_LOW = pytest.mark.xfail(strict=True, reason="recall below 0.85 at the shipped threshold (LOW_RECALL)")
#: Of those, the ones where so few roots clear the threshold that the orphan ratio stays under 5%.
PASSES_THE_GATE = {
    "node-server-process_pool-await-c32-none-idle-a0-naive-s96",
    "py-test-process_pool-await-c1-none-idle-a0-naive-s8",
}
_PASSES = pytest.mark.xfail(strict=True, reason="too few orphans reported: the gate passes (PASSES_THE_GATE)")


def load(name: str) -> tuple[dict[str, Any], list[dict[str, Any]], Path]:
    folder = CORPUS / name
    cell = json.loads((folder / "cell.json").read_text())
    truth = [json.loads(x) for x in (folder / "truth.jsonl").read_text().splitlines() if x.strip()]
    return cell, truth, folder / "dump.json"


def test_the_gate_covers_the_shapes_that_broke_before() -> None:
    dispatchers = {load(c)[0]["dispatcher"] for c in NAIVE}
    assert {"root", "test", "consumer", "server"} <= dispatchers
    assert {load(c)[0]["runtime"] for c in NAIVE} == {"python", "nodejs"}
    assert any(load(c)[0]["load"] == "saturated" for c in FIXED)


@pytest.mark.parametrize("name", [pytest.param(c, marks=_LOW) if c in LOW_RECALL else c for c in NAIVE])
def test_naive_cells_found_with_their_dispatcher(name: str) -> None:
    _, truth, dump = load(name)
    report = analyze_paths([dump], Settings(max_orphan_ratio=0.05))
    want = {t["span_id"]: t for t in truth if t["label"] == "orphan"}
    got = {span_hex(o.span.span_id): o for o in report.orphans}
    found = set(want) & set(got)
    assert got, f"none of {len(want)} orphans flagged"
    assert len(found) / len(got) >= 0.95, f"{len(got) - len(found)} legitimate roots flagged"
    assert len(found) / len(want) >= 0.85, f"{len(want) - len(found)} of {len(want)} orphans missed"
    # By shape, as the gaps group them: a test case per item is one place in the code.
    expected = {(shape(str(t["intended_parent"]["name"])), shape(t["name"])) for t in want.values()}
    reported = {(shape(g.parent_name), shape(g.orphan_name)) for g in report.gaps}
    assert expected <= reported, (expected, reported)
    assert report.gate_failed, "check --max-orphan-ratio 0.05 must fail a naive run"


@pytest.mark.parametrize("name", [pytest.param(c, marks=_PASSES) if c in PASSES_THE_GATE else c for c in NAIVE])
def test_naive_cells_fail_the_gate(name: str) -> None:
    """Whatever the recall, every naive run names its gap pattern and fails the CI gate."""
    _, truth, dump = load(name)
    report = analyze_paths([dump], Settings(max_orphan_ratio=0.05))
    want = {t["span_id"]: t for t in truth if t["label"] == "orphan"}
    got = {span_hex(o.span.span_id) for o in report.orphans}
    assert got and len(got & set(want)) / len(got) >= 0.95, f"{len(got - set(want))} legitimate roots flagged"
    # By shape, as the gaps group them: a test case per item is one place in the code.
    expected = {(shape(str(t["intended_parent"]["name"])), shape(t["name"])) for t in want.values()}
    reported = {(shape(g.parent_name), shape(g.orphan_name)) for g in report.gaps}
    assert expected <= reported, (expected, reported)
    assert report.gate_failed, "check --max-orphan-ratio 0.05 must fail a naive run"


@pytest.mark.parametrize("name", FIXED)
def test_fixed_cells_are_quiet(name: str) -> None:
    _, _, dump = load(name)
    report = analyze_paths([dump], Settings(max_orphan_ratio=0.05))
    assert report.gaps == (), [(g.parent_name, g.orphan_name, g.occurrences) for g in report.gaps]
    assert not report.gate_failed, report.summary
