"""Each piece of the orphan model on its own (docs/diagnosis.md names them).

Hand-made spans, labelled as such: every test builds the smallest timeline that shows one piece
of evidence, so that a change to the likelihood that flips its direction fails here first.
"""

from __future__ import annotations

import math
import random

import msgspec
import pytest

from ctxdoctor.diagnose import orphans as m
from ctxdoctor.findings import Orphan
from ctxdoctor.model import Span, SpanKind, Unit
from ctxdoctor.units import Boundary, Relation

MS = m.MS
UNIT = Unit(service="svc", resource=0, pid=1)


def span(trace: int, sid: int, name: str, start_ms: float, end_ms: float, parent: int = 0,
         kind: int = SpanKind.INTERNAL, unit: Unit = UNIT) -> Span:
    return Span(trace_id=trace, span_id=sid, parent_span_id=parent, name=name, kind=kind,
                start=int(start_ms * MS), end=int(end_ms * MS), flags=0, unit=unit)


def pair(lag_ms: float, gap_ms: float, contained: bool, end_gap_ms: float, pdur_ms: float, rdur_ms: float,
         one_thread: bool = False) -> m._Pair:
    return m._Pair(name="P", key=("P", ("P", 0)), lag=lag_ms * MS, gap=gap_ms * MS, contained=contained,
                   end_gap=end_gap_ms * MS, pdur=pdur_ms * MS, rdur=rdur_ms * MS, one_thread=one_thread, per_name=1)


PRM = m._Params(tau_lag=0.5 * MS, tau_end=0.5 * MS, resolution=1000.0)


# --- dispatch lag ---------------------------------------------------------------------------------


def test_a_start_right_after_the_anchor_is_evidence_of_dispatch() -> None:
    near = m._pair_lr(pair(0.1, 40, False, 0, 50, 5), PRM)
    far = m._pair_lr(pair(30, 40, False, 0, 50, 5), PRM)
    assert near > 10 * far


def test_a_lag_as_long_as_the_quiet_interval_is_only_the_queued_share() -> None:
    # The dispatched side keeps a uniform part (work that waited in a queue): a late start is
    # weak evidence, never strong counter-evidence.
    lr = m._pair_lr(pair(39.9, 40, False, 0, 200, 5), PRM)
    assert lr == pytest.approx(m._QUEUED, rel=0.05)


# --- the dispatcher waits: end alignment ----------------------------------------------------------


def test_a_dispatcher_ending_right_after_the_work_is_evidence() -> None:
    aligned = m._pair_lr(pair(20, 40, True, 0.1, 50, 10), PRM)
    anywhere = m._pair_lr(pair(20, 40, True, 25, 50, 10), PRM)
    assert aligned > 5 * anywhere


def test_work_that_fills_its_dispatcher_is_evidence_even_unaligned() -> None:
    # The uniform (not waiting) part spreads a chance end over the room the root leaves.
    fills = m._pair_lr(pair(20, 40, True, 20, 100, 95), PRM)
    small = m._pair_lr(pair(20, 40, True, 20, 100, 5), PRM)
    assert fills > small


def test_outliving_the_candidate_is_no_evidence_for_it() -> None:
    assert m._pair_lr(pair(20, 40, False, 0, 50, 200), PRM) <= 1.0


def test_one_thread_timing_is_neutral() -> None:
    # Callbacks of one event loop start and end together whether or not one dispatched the other;
    # and a root that merely shares the loop is no less likely dispatched for being unaligned.
    aligned = m._pair_lr(pair(0.01, 40, True, 0.01, 50, 49, one_thread=True), PRM)
    unaligned = m._pair_lr(pair(30, 40, False, 0, 50, 200, one_thread=True), PRM)
    assert aligned == unaligned == 1.0
    assert m._pair_lr(pair(0.01, 40, True, 0.01, 50, 49), PRM) > 1.0


# --- group pieces ---------------------------------------------------------------------------------


def test_periodic_roots_are_recognised() -> None:
    group = [m._Suspect(span(i + 10, i + 10, "tick", 20 * i + (0.5 if i % 3 else 0), 20 * i + 3), []) for i in range(8)]
    assert m._periodic(group, m.ModelParams().periodic_cv)
    # A tick delayed by a busy scheduler does not hide the period; starts at random do not make one.
    delayed = [m._Suspect(span(i + 10, i + 10, "tick", 20 * i + (35 if i == 4 else 0), 20 * i + 40), [])
               for i in range(9)]
    assert m._periodic(delayed, m.ModelParams().periodic_cv)
    starts = [0, 3, 17, 21, 50, 52, 90, 131, 140]
    scattered = [m._Suspect(span(i + 10, i + 10, "job", t, t + 1), []) for i, t in enumerate(starts)]
    assert not m._periodic(scattered, m.ModelParams().periodic_cv)


# --- count balance --------------------------------------------------------------------------------


def lengths(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(5, 60) * MS for _ in range(n)]


def test_a_fixed_number_of_roots_per_span_whatever_its_length_is_dispatch() -> None:
    ls = lengths(30, 1)
    assert m._balance_fit([1] * 30, ls)[0] > 10
    assert m._balance_fit([3] * 30, ls)[0] > 10


def test_dispatch_shows_under_roots_of_other_dispatchers_landing_by_length() -> None:
    # Many dispatchers at once: each span holds its own root plus others' that land in it.
    rng = random.Random(2)
    ls = lengths(40, 2)
    counts = [1 + sum(1 for _ in range(8) if rng.random() < t / (80 * MS)) for t in ls]
    assert m._balance_fit(counts, ls)[0] > 2


def test_roots_that_land_by_length_are_not_balanced() -> None:
    # Random starts (Poisson in each span's length) and a timer's ticks (one more or less than
    # length / period) both follow the span's length, not a fixed count.
    rng = random.Random(3)
    ls = lengths(40, 3)
    rate = 1 / (20 * MS)
    poisson = []
    for t in ls:
        k, acc = 0, rng.expovariate(rate)
        while acc < t:
            k, acc = k + 1, acc + rng.expovariate(rate)
        poisson.append(k)
    assert m._balance_fit(poisson, ls)[0] < 0
    phase = [rng.uniform(0, 20 * MS) for _ in ls]
    ticks = [int((t + p) // (20 * MS)) for t, p in zip(ls, phase, strict=True)]
    assert m._balance_fit(ticks, ls)[0] < 0


def test_a_span_without_a_root_counts_against_dispatch() -> None:
    ls = lengths(30, 4)
    assert m._balance_fit([1] * 20 + [0] * 10, ls)[0] < m._balance_fit([1] * 30, ls)[0]
    assert m._balance_fit([0] * 30, ls)[0] == -math.inf


def _balance_of(roots: list[Span], dispatchers: list[Span]) -> dict[str, tuple[float, float, float]]:
    group = [m._Suspect(r, [m._Candidate(d, Relation.SAME_PROCESS) for d in dispatchers]) for r in roots]
    return m._balance(group, {"D": dispatchers})


def test_dispatchers_that_each_hand_out_a_few_roots_are_balanced() -> None:
    # Three roots each, whatever the span's length (40 to 310 ms); the first and last spans
    # reach outside the roots' time and are not counted: 3 x 8 of the 30 roots.
    ds = [span(i, i, "D", i * 400, i * 400 + 40 + 30 * i) for i in range(10)]
    roots = [span(100 + 3 * i + k, 100 + 3 * i + k, "W", i * 400 + 5 + 10 * k, i * 400 + 8 + 10 * k)
             for i in range(10) for k in range(3)]
    llr, share, per_span = _balance_of(roots, ds)["D"]
    assert llr > 5 and share == pytest.approx(0.8) and per_span == pytest.approx(3.0)


def test_a_timer_slowed_over_time_inside_overlapping_spans_is_not_balanced() -> None:
    # Long spans that all start together and cover one stretch of time, and a timer's ticks
    # that come every 10 ms at first and every 100 ms later (a thread slowed by load). The
    # counts fit a line with a large intercept, but each span would then hand out some forty
    # roots: more than the roots there are, so it is no hand-out.
    ds = [span(i, i, "D", 0.5 * i, 500 + 50 * i) for i in range(10)]
    ticks = [10 * k for k in range(50)] + [500 + 100 * k for k in range(10)]
    roots = [span(1000 + k, 1000 + k, "heartbeat", t + 0.1, t + 0.6) for k, t in enumerate(ticks)]
    counts = [sum(1 for r in roots if d.start <= r.start <= d.end) for d in ds]
    assert m._balance_fit(counts, [float(d.end - d.start) for d in ds])[0] > 0  # what the bound is for
    assert "D" not in _balance_of(roots, ds)


def test_covered_counts_each_index_once() -> None:
    assert m._covered([(0, 3), (2, 5), (7, 8)]) == 6
    assert m._covered([]) == 0
    assert m._covered([(4, 6), (0, 10)]) == 10


def test_the_fit_says_how_many_roots_each_span_hands_out() -> None:
    ls = lengths(30, 5)
    assert m._balance_fit([3] * 30, ls)[1] == pytest.approx(3.0)
    assert m._balance_fit([0] * 30, ls) == (-math.inf, 0.0)
    # Below half a root per span the intercept is no dispatch: nothing is handed out.
    assert m._balance_fit([0] * 25 + [1] * 5, ls)[1] == 0.0


def test_the_counted_share_only_moves_a_posterior_by_the_balance_confidence() -> None:
    # With the EM's share 0.5 a posterior of 0.6 means a likelihood ratio of 1.5.
    assert m._with_share(0.6, 0.5, 0.9, 0.0) == pytest.approx(0.6)
    assert m._with_share(0.6, 0.5, 0.9, 1.0) == pytest.approx(0.9 * 1.5 / (0.9 * 1.5 + 0.1))
    half = m._with_share(0.6, 0.5, 0.9, 0.5)
    assert half == pytest.approx(0.5 * 0.6 + 0.5 * 0.9 * 1.5 / (0.9 * 1.5 + 0.1))
    # A counted share above the cap of every share is held to it; certain posteriors stay.
    assert m._with_share(0.6, 0.5, 1.0, 1.0) == m._with_share(0.6, 0.5, m._MAX_SHARE, 1.0) < 1.0
    assert m._with_share(1.0, 0.5, 0.9, 1.0) == 1.0 and m._with_share(0.0, 0.5, 0.9, 1.0) == 0.0


def test_union_length_counts_overlaps_once() -> None:
    spans = [span(1, 1, "a", 0, 10), span(2, 2, "a", 5, 15), span(3, 3, "a", 20, 30)]
    assert m._union_length(spans) == 25 * MS


def test_keep_prefers_latest_started_and_soonest_ending() -> None:
    r = span(100, 100, "R", 50, 60)
    cands = [m._Candidate(span(i, i, "P", i * 0.01, 61 + i), Relation.SAME_PROCESS) for i in range(200)]
    kept = m._keep(r, cands)
    assert len(kept) <= m.MAX_CANDIDATES
    assert max(c.parent.start for c in cands) in {c.parent.start for c in kept}
    assert min(c.parent.end for c in cands) in {c.parent.end for c in kept}


# --- joint consistency ----------------------------------------------------------------------------


def orphan(child: Span, parent: Span, conf: float) -> Orphan:
    return Orphan(span=child, parent=parent, boundary=Boundary.THREAD, boundary_evidence="", confidence=conf,
                  parent_confidence=1.0, candidates=1)


def test_two_roots_cannot_each_be_dispatched_from_the_other() -> None:
    a, b = span(1, 1, "A", 0, 10), span(2, 2, "B", 1, 9)
    strong, weak = orphan(b, a, 0.9), orphan(a, b, 0.6)
    assert m._acyclic([strong, weak]) == [strong]


def test_a_longer_loop_is_cut_at_its_weakest_link() -> None:
    a, b, c = span(1, 1, "A", 0, 10), span(2, 2, "B", 1, 9), span(3, 3, "C", 2, 8)
    ab, bc, ca = orphan(b, a, 0.9), orphan(c, b, 0.8), orphan(a, c, 0.7)
    assert m._acyclic([ab, bc, ca]) == [ab, bc]


def test_one_kind_of_root_does_not_both_hand_work_to_another_and_take_work_from_it() -> None:
    # Batch items A1, A2 each hand a task to a worker (W1, W2 heads of their traces, with a step
    # S inside). A2 starting while W1's step runs makes A2 look handed out by W1's trace: the
    # weaker direction between the two groups goes, whatever the traces.
    a1, a2 = span(1, 1, "batch item 1", 0, 10), span(2, 2, "batch item 2", 5, 15)
    w1, w2 = span(3, 3, "work", 1, 9), span(4, 4, "work", 6, 14)
    step = span(3, 5, "step", 4, 6, parent=3)
    forward = [orphan(w1, a1, 0.9), orphan(w2, a2, 0.9)]
    backward = orphan(a2, step, 0.85)
    heads = {1: m._group_of(a1), 2: m._group_of(a2), 3: m._group_of(w1), 4: m._group_of(w2)}
    assert m._one_way([*forward, backward], heads) == forward
    # Alone, the backward finding has nothing to lose to.
    assert m._one_way([backward], heads) == [backward]
    # Within one group both directions stay (items of a batch): the trace-level loop check decides.
    peers = [orphan(a2, a1, 0.9), orphan(a1, a2, 0.6)]
    assert m._one_way(peers, heads) == peers


def test_chains_without_loops_are_kept() -> None:
    a, b, c = span(1, 1, "A", 0, 10), span(2, 2, "B", 1, 9), span(3, 3, "C", 2, 8)
    chain = [orphan(b, a, 0.9), orphan(c, b, 0.8)]
    assert m._acyclic(chain) == chain


# --- the whole search on small timelines ----------------------------------------------------------


def dispatch_timeline(n: int, lag_ms: float, root_dispatcher: bool) -> list[Span]:
    """``n`` dispatchers, each handing one work item to another thread of the same process."""
    spans: list[Span] = []
    for i in range(n):
        t0 = i * 30.0
        tid, wid = 1000 + i, 5000 + i
        if root_dispatcher:
            spans.append(span(tid, tid, "process_batch", t0, t0 + 20))
            parent = tid
        else:
            spans.append(span(tid, tid, "POST /jobs", t0, t0 + 21, kind=SpanKind.SERVER))
            spans.append(span(tid, tid + 1, "process_batch", t0 + 0.5, t0 + 20, parent=tid))
            parent = tid + 1
        spans.append(span(tid, tid + 2, "SELECT", t0 + 1, t0 + 3, parent=parent, kind=SpanKind.CLIENT))
        spans.append(span(wid, wid, "crunch", t0 + 3 + lag_ms, t0 + 19.8))
    return spans


@pytest.mark.parametrize("root_dispatcher", [False, True])
def test_dispatched_work_is_found_whether_or_not_the_dispatcher_is_a_root(root_dispatcher: bool) -> None:
    orphans, _ = m.find_orphans(dispatch_timeline(20, 0.05, root_dispatcher))
    found = {o.span.name: o for o in orphans if o.confidence >= 0.5}
    assert set(found) == {"crunch"}, [(o.span.name, o.confidence) for o in orphans]
    assert all(o.parent is not None and o.parent.name == "process_batch" for o in orphans if o.span.name == "crunch")


def test_calibration_against_shifted_copies() -> None:
    # Roots that score like copies at random times are chance; roots far above them are not.
    chance = [float(x % 7) for x in range(400)]
    assert max(m._calibrate([3.0, 4.0, 5.0, 2.0], chance)) < 0.5
    confident = m._calibrate([50.0] * 20 + [1.0] * 5, chance)
    assert min(confident[:20]) > 0.9 and max(confident[20:]) < 0.5
    assert m._calibrate([0.0], chance) == [0.0]


def test_shifted_copies_keep_unit_name_and_length_and_move_a_little() -> None:
    group = [m._Suspect(span(i + 10, i + 10, "crunch", 100 + 5 * i, 103 + 5 * i), []) for i in range(10)]
    prm = m._Params(tau_lag=1 * MS, tau_end=1 * MS, resolution=1000.0)
    copies = m._shifted(group, prm, m._PLACEBO_TRACE)
    assert len(copies) == 10 * m._PLACEBO_SHIFTS
    jitter = m._jitter(prm)
    for i, c in enumerate(copies):
        original = group[i // m._PLACEBO_SHIFTS].span
        assert c.name == "crunch" and c.unit == UNIT and c.end - c.start == 3 * MS
        assert jitter / 2 - 1 <= abs(c.start - original.start) <= jitter + 1
        assert c.trace_id >= m._PLACEBO_TRACE
    assert any(c.start < group[0].span.start for c in copies[: m._PLACEBO_SHIFTS])
    assert any(c.start > group[0].span.start for c in copies[: m._PLACEBO_SHIFTS])


def test_shifted_copies_stay_inside_the_recording() -> None:
    # A jitter longer than what was recorded wraps around instead of leaving it.
    group = [m._Suspect(span(i + 10, i + 10, "crunch", 100 + 5 * i, 103 + 5 * i), []) for i in range(10)]
    prm = m._Params(tau_lag=500 * MS, tau_end=500 * MS, resolution=1000.0)
    window = (90 * MS, 160 * MS)
    for c in m._shifted(group, prm, m._PLACEBO_TRACE, window):
        assert window[0] <= c.start and c.end <= window[1]


def test_tied_scores_give_chance_roots_uniform_p_values() -> None:
    # Neutral evidence: roots and copies all score alike. Ties must not pile p-values up under
    # one half, where they would read as a group of mostly dispatched roots.
    n = 400
    ties = [(k + 0.5) / n for k in range(n)]
    q = m._p_values([1.0] * n, [1.0] * 800, ties)
    assert 0.4 < sum(1 for x in q if x > 0.5) / n < 0.6
    assert m._chance_share(q) > 0.8
    assert max(m._fdr_confidence(q)) <= 0.5


def test_group_share_is_one_less_the_chance_share() -> None:
    dispatched = [0.001] * 90 + [0.7] * 10
    chance = [k / 100 for k in range(100)]
    assert m._chance_share(dispatched) < 0.3 < 0.8 < m._chance_share(chance)


def test_a_groups_p_value_is_fishers_combination() -> None:
    # One root: its own p-value. Chance roots together: no better than chance (uniform over
    # seeds); thirty roots each beating four in five of their copies: far beyond it.
    assert m._group_p([0.3]) == pytest.approx(0.3)
    assert m._group_p([]) == 1.0
    # Closed form against the chi-square survival of 2n degrees of freedom for n = 2.
    x = -2 * (math.log(0.1) + math.log(0.4))
    assert m._group_p([0.1, 0.4]) == pytest.approx(math.exp(-x / 2) * (1 + x / 2))
    uniform = [m._group_p([random.Random(seed * 100 + k).random() for k in range(30)]) for seed in range(200)]
    assert 0.02 < sum(1 for p in uniform if p < 0.1) / len(uniform) < 0.2
    assert m._group_p([0.2] * 30) < 1e-2
    assert m._group_p([1.0] * 30) == pytest.approx(1.0)


def test_roots_of_one_span_count_once_in_the_groups_p_value() -> None:
    # Thirty roots each beating four in five of their copies are far beyond chance when they
    # started in thirty spans; started in a burst inside two spans, they are two coincidences.
    assert m._group_p([0.2] * 30, 30) == pytest.approx(m._group_p([0.2] * 30))
    assert m._group_p([0.2] * 30, 2) == pytest.approx(m._group_p([0.2, 0.2]))
    assert m._group_p([0.2] * 30, 2) > 0.05 > 0.01 > m._group_p([0.2] * 30, 30)


def test_a_p_value_bounds_the_posterior_it_can_give() -> None:
    # At or above 1/e a p-value is no evidence: the prior (a quarter of groups dispatched).
    assert m._p_to_posterior(0.5) == pytest.approx(0.25)
    assert m._p_to_posterior(1 / math.e) == pytest.approx(0.25)
    # p = 0.1 is weak (a Bayes factor of at most 1.6); p = 0.001 is strong.
    assert m._p_to_posterior(0.1) < 0.4
    assert m._p_to_posterior(1e-3) > 0.9
    # The bound itself, and monotone in p.
    p = 0.01
    assert m._p_to_posterior(p) == pytest.approx(1 / (1 + 3 * (-math.e * p * math.log(p))))
    ps = [10.0**-k for k in range(1, 12)]
    posts = [m._p_to_posterior(x) for x in ps]
    assert posts == sorted(posts)
    assert m._p_to_posterior(0.0) == 1.0


def test_a_few_roots_that_beat_their_copies_are_not_confident_on_that_alone() -> None:
    # Two ticks of a timer that beat their copies at p = 0.07 and 0.1 (a group share of one,
    # both under lambda): one false-discovery rate over two roots would say 0.89.
    pair_ = [scored_root(0.07, "tick", 0.04, 1.0), scored_root(0.1, "tick", 0.04, 1.0)]
    assert max(o.confidence for o in m._decide(pair_, m.ModelParams(group_test=False))) < 0.85
    # Thirty roots of a group that all beat most of their copies are.
    many = [scored_root(0.02, "work", 1e-30, 1.0) for _ in range(30)]
    assert min(o.confidence for o in m._decide(many, m.ModelParams(group_test=False))) > 0.85
    assert m._smoothed_share(1.0, 2) == pytest.approx(0.5)
    assert m._smoothed_share(1.0, 96) == pytest.approx(97 / 100)


def scored_root(p_value: float, group: str, group_p: float, share: float, posterior: float = 0.99,
                p_bound: float | None = None) -> m._Tested:
    root = span(1, 1, group, 0, 1)
    orphan = Orphan(span=root, parent=None, boundary=Boundary.THREAD, boundary_evidence="", confidence=0.0,
                    parent_confidence=1.0, candidates=1)
    return m._Tested(orphan, posterior, p_value, 0.0, share, (0, "svc", group), group_p,
                     p_value if p_bound is None else p_bound)


def test_a_root_beating_every_copy_is_bounded_by_how_many_copies_there_are() -> None:
    # Without tie shares a root better than all eight copies has p = 1/9, whatever its draw.
    assert m._p_values([5.0], [1.0] * 8) == [pytest.approx(1 / 9)]
    assert m._p_values([5.0], [1.0] * 8, [0.05])[0] < 0.01
    # A lone root whose tie share drew p = 0.007 is as sure as eight copies allow, no surer.
    lone = scored_root(0.007, "heartbeat", 0.007, 1.0, posterior=0.92, p_bound=1 / 9)
    assert m._decide([lone], m.ModelParams())[0].confidence < 0.85


def test_a_group_beating_chance_as_a_whole_lends_its_share_to_its_better_roots() -> None:
    group = [scored_root(0.2, "render", 1e-6, 1.0) for _ in range(29)]
    # Each root alone is far from sure: its p-value is one in five.
    alone = m._decide(group, m.ModelParams(group_test=False))
    assert max(o.confidence for o in alone) < 0.85
    together = m._decide(group, m.ModelParams(group_test=True))
    assert min(o.confidence for o in together) > 0.95
    # A root that scores like chance (above lambda) borrows nothing, and the lent confidence
    # never exceeds the group's share of non-chance roots.
    mixed = [scored_root(0.2, "render", 1e-6, 0.6) for _ in range(20)] + [scored_root(0.8, "render", 1e-6, 0.6)]
    decided = m._decide(mixed, m.ModelParams(group_test=True))
    assert max(o.confidence for o in decided) <= 0.6
    assert min(o.confidence for o in decided) < 0.3
    # A group no better than chance as a whole lends nothing.
    weak = [scored_root(0.2, "tick", 0.4, 1.0) for _ in range(3)]
    assert max(o.confidence for o in m._decide(weak, m.ModelParams(group_test=True))) < 0.85


def test_a_confidence_that_comes_from_the_group_says_so() -> None:
    root = scored_root(0.2, "render", 1e-6, 1.0)
    lifted = [msgspec.structs.replace(root, group_note="together", balance_note="counted") for _ in range(29)]
    decided = m._decide(lifted, m.ModelParams(group_test=True))
    assert all(o.evidence[-1:] == ("together; alone, this one beats 80% of its copies",) for o in decided)
    counted = [msgspec.structs.replace(t, balanced=0.99) for t in lifted]
    assert all(o.evidence[-1:] == ("counted",) for o in m._decide(counted, m.ModelParams(group_test=False)))
    # A root surer on its own timing than its group is needs no word from the group.
    alone = [msgspec.structs.replace(scored_root(1e-4, "render", 0.4, 1.0), group_note="together") for _ in range(29)]
    assert all("together" not in o.evidence for o in m._decide(alone, m.ModelParams(group_test=True)))


def test_names_are_grouped_by_shape() -> None:
    assert m.shape("handles item 7") == m.shape("handles item 12") == "handles item #"
    assert m.shape("test_parse[3]") == "test_parse[#]"
    assert m.shape("GET /users/1234") == "GET /users/#"
    assert m.shape("span 9f86d081884c7d65") == "span #"
    assert m.shape("accepted") == "accepted" and m.shape("deadbeef") == "deadbeef"


def test_roots_unrelated_to_the_busy_spans_stay_roots() -> None:
    # A job whose starts fall at random places in the dispatchers' time, with random lengths.
    spans = [s for s in dispatch_timeline(20, 0.05, False) if s.name != "crunch"]
    for k in range(20):
        start = 7.3 * k + 2.1 * (k % 3)
        spans.append(span(9000 + k, 9000 + k, "refresh_cache", start, start + 1 + (k * 37 % 11)))
    orphans, _ = m.find_orphans(spans)
    assert not [o for o in orphans if o.confidence >= 0.5], [(o.span.name, o.confidence) for o in orphans]


def test_model_switches_are_distinct_variants() -> None:
    variants = m.ModelParams.variants()
    assert len(set(variants)) == len(variants) >= 2
    assert m.ModelParams() in variants

