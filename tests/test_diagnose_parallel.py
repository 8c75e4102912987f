"""Diagnosing with a forked helper process gives the same report as diagnosing alone. Real SDK
dumps from fixtures/scenarios; the span threshold is lowered so that these small dumps fork."""

from __future__ import annotations

import os

import pytest

import ctxdoctor.diagnose as diagnosis
from ctxdoctor.diagnose import _split, diagnose
from ctxdoctor.diagnose.orphans import plan_search
from ctxdoctor.forked import memory_to_spare
from ctxdoctor.readers import read_paths
from tests.scenarios import SCENARIOS

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture(autouse=True)
def fork_for_small_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnosis, "PARALLEL_MIN_SPANS", 0)


@pytest.mark.parametrize(
    "scenario",
    ["python-mixed-c32", "node-worker-threads-naive-c32", "healthy-server", "python-threadpool-naive-c32"],
)
def test_same_report_with_a_forked_search(scenario: str) -> None:
    spans = read_paths([SCENARIOS / scenario / "dump.json"]).spans
    assert len(plan_search(spans).parts) >= 1
    alone = diagnose(spans)
    shared = diagnose(spans, jobs=2)
    assert shared == alone
    if scenario != "healthy-server":
        assert shared.orphans  # the comparison covered found orphans, not only empty lists


def test_several_dumps_at_once_split_the_partitions_both_ways() -> None:
    paths = [SCENARIOS / s / "dump.json" for s in ("python-mixed-c32", "node-piscina-naive", "node-fork-naive")]
    spans = read_paths(paths).spans
    plan = plan_search(spans)
    theirs, ours = _split(plan.weights(), diagnosis._FORKED_SHARE)
    assert theirs and ours and sorted(theirs + ours) == list(range(len(plan.parts)))
    assert diagnose(spans, jobs=2) == diagnose(spans)


def test_split_gives_the_forked_process_about_its_share() -> None:
    theirs, ours = _split([50, 30, 10, 5, 5], 0.8)
    assert theirs == [0, 1] and ours == [2, 3, 4]
    assert _split([7], 0.8) == ([0], [])  # never an idle child
    assert _split([], 0.8) == ([], [])


def test_a_search_process_that_dies_is_searched_again_here(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = os.getpid()
    real = diagnosis.search

    def dies_in_the_child(*args: object) -> object:
        if os.getpid() != parent:
            os._exit(7)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(diagnosis, "search", dies_in_the_child)
    spans = read_paths([SCENARIOS / "python-mixed-c32" / "dump.json"]).spans
    assert diagnose(spans, jobs=2) == diagnose(spans)


def test_no_fork_without_memory_to_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    """The search process may copy as much memory as the spans take: not when that is short."""
    spans = read_paths([SCENARIOS / "python-mixed-c32" / "dump.json"]).spans
    expected = diagnose(spans)

    def no_fork() -> int:
        raise AssertionError("forked without memory to spare")

    monkeypatch.setattr(diagnosis, "memory_to_spare", lambda factor: False)
    monkeypatch.setattr(os, "fork", no_fork)
    assert diagnose(spans, jobs=2) == expected


def test_memory_to_spare_reads_this_machine() -> None:
    assert memory_to_spare(0.0)
    if os.path.exists("/proc/meminfo"):
        assert not memory_to_spare(1e9)  # a billion times this process is more than any machine


def test_no_process_to_be_had_means_searching_here(monkeypatch: pytest.MonkeyPatch) -> None:
    spans = read_paths([SCENARIOS / "python-mixed-c32" / "dump.json"]).spans
    expected = diagnose(spans)

    def fork_fails() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", fork_fails)
    assert diagnose(spans, jobs=2) == expected
