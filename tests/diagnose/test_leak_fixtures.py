"""Leaks and silent dispatches on dumps recorded from real apps over real OTLP (fixtures/leaks/,
recorded by fixtures/leaks_corpus.py, truth written by the apps): the committed regression gate.
The whole matrix is scored held-out by bench/accuracy_leaks.py."""

from __future__ import annotations

import importlib.util
import json
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ctxdoctor.diagnose import diagnose
from ctxdoctor.findings import Report, Settings
from ctxdoctor.model import span_hex
from ctxdoctor.readers import read_paths
from tests.helpers import report as scenario_report
from tests.helpers import scenario_names

ROOT = Path(__file__).resolve().parents[2]
LEAKS = ROOT / "fixtures" / "leaks"
NAMES = sorted(p.parent.name for p in LEAKS.glob("*/dump.json"))


@cache
def corpus() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ctxdoctor_leaks_corpus", ROOT / "fixtures" / "leaks_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def meta(name: str) -> dict[str, Any]:
    return json.loads((LEAKS / name / "meta.json").read_text())


@cache
def report(name: str) -> Report:
    return diagnose(read_paths([LEAKS / name / "dump.json"]).spans, Settings())


def truth(name: str) -> list[dict[str, Any]]:
    return corpus().read_truth(LEAKS / name / "truth.jsonl")


def test_the_committed_subset_is_every_case_it_names() -> None:
    assert sorted(corpus().COMMITTED_CASES) == NAMES


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("leak-") and meta(n)["kind"] == "naive"])
def test_leaked_spans_are_found_precisely_with_the_wrong_parent_and_the_fix(name: str) -> None:
    want = {r["span_id"]: r for r in truth(name) if r["label"] == "leak"}
    got = {span_hex(lk.span.span_id): lk for lk in report(name).leaks}
    tp = set(want) & set(got)
    assert len(tp) / len(got) >= 0.95, f"precision {len(tp)}/{len(got)}"
    assert len(tp) / len(want) >= 0.90, f"recall {len(tp)}/{len(want)}"
    for sid in tp:
        assert span_hex(got[sid].wrong_parent.span_id) == want[sid]["wrong_parent"]["span_id"]
        assert got[sid].evidence and got[sid].fix.apis
    assert report(name).summary.leaked_spans == len(got)


def test_timer_ticks_are_leaks_that_should_have_been_roots() -> None:
    leaks = report("leak-interval-startup-internal-low").leaks
    assert leaks and all(lk.likely_parent is None for lk in leaks)


def test_event_handlers_name_the_span_that_emitted_them_as_the_likely_parent() -> None:
    name = "leak-emitter-first-server-low"
    want = {r["span_id"]: r["intended_parent"]["span_id"] for r in truth(name) if r["label"] == "leak"}
    named = [lk for lk in report(name).leaks if lk.likely_parent is not None]
    right = [lk for lk in named if span_hex(lk.likely_parent.span_id) == want.get(span_hex(lk.span.span_id))]  # type: ignore[union-attr]
    assert len(right) >= 0.75 * len(want)


def test_pool_callbacks_name_the_query_that_waited_for_them_as_the_likely_parent() -> None:
    # Several queries run at once when the pool's loop runs their callbacks: the innermost running
    # span is often another request's; the query that awaited the callback ends just after it.
    name = "leak-pool-first-consumer-low"
    want = {r["span_id"]: r["intended_parent"]["span_id"] for r in truth(name) if r["label"] == "leak"}
    leaks = report(name).leaks
    right = [
        lk
        for lk in leaks
        if lk.likely_parent is not None and span_hex(lk.likely_parent.span_id) == want.get(span_hex(lk.span.span_id))
    ]
    assert len(want) >= 8 and len(right) >= 0.9 * len(want)
    assert all("waited for the work" in lk.evidence[-1] for lk in right)


@pytest.mark.parametrize("name", [n for n in NAMES if meta(n)["kind"] != "naive"])
def test_no_leak_or_silent_finding_on_a_fixed_or_control_run(name: str) -> None:
    rep = report(name)
    assert rep.leaks == () and rep.silent_dispatches == ()


def test_leaked_spans_count_as_broken_fragments() -> None:
    s = report("leak-pool-first-consumer-low").summary
    assert s.leaked_spans > 0
    assert s.broken_fragments == s.suspected_orphans + s.lost_parents + s.leaked_spans
    assert s.fragments >= s.roots + s.leaked_spans
    assert s.orphan_ratio == s.broken_fragments / s.fragments


def test_silent_dispatches_are_the_dispatches_whose_worker_spans_never_arrived() -> None:
    name = "silent-unflushed-server-low"
    spans = read_paths([LEAKS / name / "dump.json"]).spans
    silent = corpus().silent_dispatches(truth(name), {span_hex(s.span_id) for s in spans})
    got = {span_hex(d.span.span_id) for d in report(name).silent_dispatches}
    assert got, "the unflushed pool's lost tail is reported"
    assert got <= silent, "every reported dispatch is one whose worker spans never arrived"
    d = report(name).silent_dispatches[0]
    assert d.boundary.value == "process"
    assert any("from another unit" in w for w in d.evidence)
    assert "TracerProvider.force_flush()" in d.fix.apis
    assert report(name).summary.silent_dispatches == len(got)


def test_a_node_worker_thread_terminated_before_its_flush_is_a_silent_thread_dispatch() -> None:
    name = "silent-node-unflushed-thread-server-low"
    spans = read_paths([LEAKS / name / "dump.json"]).spans
    silent = corpus().silent_dispatches(truth(name), {span_hex(s.span_id) for s in spans})
    got = report(name).silent_dispatches
    assert got and {span_hex(d.span.span_id) for d in got} <= silent
    assert all(d.boundary.value == "thread" for d in got)
    assert "await sdk.shutdown()" in got[0].fix.apis


def test_python_pool_and_asyncio_leaks_name_the_caller_that_waited() -> None:
    for name in ("leak-py-pool-first-server-low", "leak-py-asyncio-startup-internal-low"):
        want = {r["span_id"]: r["intended_parent"]["span_id"] for r in truth(name) if r["label"] == "leak"}
        right = [
            lk
            for lk in report(name).leaks
            if lk.likely_parent is not None
            and span_hex(lk.likely_parent.span_id) == want.get(span_hex(lk.span.span_id))
        ]
        assert len(right) >= 0.85 * len(want), name


@pytest.mark.parametrize("name", scenario_names())
def test_no_leak_or_silent_finding_on_the_lost_context_scenarios(name: str) -> None:
    """The orphan scenarios (fixtures/scenarios/) lose context or parents, and leak nothing: work
    handed to a worker that exported into a trace of its own, or whose parent was lost, is not a
    silent worker, and a deferred child is not a leak."""
    rep = scenario_report(name)
    assert rep.leaks == (), [(lk.wrong_parent.name, lk.span.name) for lk in rep.leaks]
    assert rep.silent_dispatches == (), [d.span.name for d in rep.silent_dispatches]
