"""Each piece of the context-leak model on hand-made spans (labelled as such: the recorded
real-SDK runs are in test_leak_fixtures.py). One test per piece of evidence or rule."""

from __future__ import annotations

import math

from ctxdoctor.diagnose.leaks import DEFAULT, LeakCandidate, LeakParams, candidates, find_leaks, periodic_cv, score
from ctxdoctor.model import FLAG_IS_REMOTE_KNOWN, FLAG_PARENT_IS_REMOTE, Span, SpanKind, Unit

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000
APP = Unit(service="orders-api", resource=0, language="nodejs")
OTHER = Unit(service="orders-api", resource=1, language="nodejs")
_ids = iter(range(1, 1 << 30))


def span(name: str, start_ms: float, end_ms: float, *, trace: int, parent: Span | None = None, **kw: object) -> Span:
    fields: dict[str, object] = {"kind": SpanKind.INTERNAL, "flags": 0, "unit": APP, **kw}
    return Span(
        trace_id=trace,
        span_id=next(_ids),
        parent_span_id=parent.span_id if parent else 0,
        name=name,
        start=T0 + int(start_ms * MS),
        end=T0 + int(end_ms * MS),
        **fields,  # type: ignore[arg-type]
    )


def cand(**kw: object) -> LeakCandidate:
    parent = span("subscribe", 0, 1, trace=1)
    child = span("audit order", 50, 52, trace=1, parent=parent)
    base: dict[str, object] = {
        "span": child,
        "parent": parent,
        "late": True,
        "same_name_late": 1,
        "siblings": 1,
        "spread": 0.0,
        "chain": 0,
        "extent_ratio": 1.0,
        "peers": 0,
        "typical": 0.0,
    }
    base.update(kw)
    return LeakCandidate(**base)  # type: ignore[arg-type]


def test_a_late_child_adds_the_late_weight_and_alone_stays_below_the_threshold() -> None:
    logit, why = score(cand())
    assert logit == DEFAULT.prior + DEFAULT.w_late
    assert "after its parent 'subscribe' ended" in why[0]
    assert 1 / (1 + math.exp(-logit)) < DEFAULT.threshold


def test_repeated_late_children_count_per_doubling_up_to_the_cap() -> None:
    four, _ = score(cand(same_name_late=4, spread=1.0))
    huge, _ = score(cand(same_name_late=4096, spread=1.0))
    base, _ = score(cand())
    assert four - base == DEFAULT.w_repeat * 2 + DEFAULT.w_bunched
    assert huge - base == DEFAULT.w_repeat * DEFAULT.repeat_cap + DEFAULT.w_bunched


def test_late_children_spread_far_beyond_their_own_durations_are_a_stream_not_a_batch() -> None:
    stream, why = score(cand(same_name_late=8, spread=DEFAULT.spread_ratio))
    batch, _ = score(cand(same_name_late=8, spread=DEFAULT.spread_ratio - 1))
    assert stream - batch == DEFAULT.w_spread - DEFAULT.w_bunched
    assert any("starts spread over 4x" in w for w in why)


def test_spread_is_how_far_apart_the_late_children_start_not_how_late_they_are() -> None:
    parent = span("connect pool", 0, 50, trace=1)
    stream = [span("process rows", 100 + 60 * k, 102 + 60 * k, trace=1, parent=parent) for k in range(6)]
    # A batch the event loop ran 60 ms late, all at once: late, but not a stream.
    batch_parent = span("sync", 0, 4, trace=2)
    batch = [span("reindex", 64 + 0.1 * k, 66 + 0.1 * k, trace=2, parent=batch_parent) for k in range(3)]
    got = {c.parent.name: c.spread for c in candidates([parent, *stream, batch_parent, *batch])}
    assert got["connect pool"] == 300 / 50
    assert got["sync"] < 0.1


def test_peers_with_as_many_children_make_it_the_apps_normal_shape() -> None:
    typical, _ = score(cand(peers=10, siblings=3, typical=3.0))
    alone, _ = score(cand(peers=0, siblings=3, typical=0.0))
    assert typical - alone == DEFAULT.w_typical


def test_fan_out_far_above_the_peers_counts_per_doubling() -> None:
    logit, why = score(cand(peers=10, siblings=16, typical=1.0))
    base, _ = score(cand())
    assert logit - base == DEFAULT.w_fanout * 3  # capped at fanout_cap = 3 doublings
    assert any("its 10 peers typically have 1" in w for w in why)


def test_too_few_peers_are_no_evidence_either_way() -> None:
    few, _ = score(cand(peers=DEFAULT.min_peers - 1, siblings=1, typical=1.0))
    base, _ = score(cand())
    assert few == base


def test_a_span_nested_under_an_ended_span_of_its_name_and_a_chain_of_them() -> None:
    parent = span("poll", 0, 1, trace=1)
    child = span("poll", 20, 21, trace=1, parent=parent)
    one, _ = score(cand(span=child, parent=parent, chain=1, peers=10, siblings=1, typical=1.0))
    chain, why = score(cand(span=child, parent=parent, chain=DEFAULT.chain_min, peers=10, siblings=1, typical=1.0))
    base, _ = score(cand())
    # Peers are not held against a nested span: in a chain, every peer is itself leaked.
    assert one - base == DEFAULT.w_nested
    assert chain - one == DEFAULT.w_chain
    assert any("chain of 3" in w for w in why)


def test_a_trace_that_lasts_far_longer_than_its_root() -> None:
    long, why = score(cand(extent_ratio=DEFAULT.extent_ratio))
    base, _ = score(cand())
    assert long - base == DEFAULT.w_extent
    assert any("as long as its root" in w for w in why)


def test_only_children_that_start_after_their_parent_ended_are_candidates() -> None:
    root = span("POST /orders", 0, 10, trace=1, kind=SpanKind.SERVER)
    inside = span("validate", 1, 3, trace=1, parent=root)
    late = span("send receipt", 15, 16, trace=1, parent=root)
    within_grace = span("log", 10.5, 11, trace=1, parent=root)
    got = candidates([root, inside, late, within_grace])
    assert [c.span.name for c in got] == ["send receipt"]


def test_a_remote_or_foreign_parent_is_propagation_on_purpose_not_a_leak() -> None:
    producer = span("publish", 0, 1, trace=1, kind=SpanKind.PRODUCER)
    remote = span(
        "consume",
        5,
        6,
        trace=1,
        parent=producer,
        kind=SpanKind.CONSUMER,
        flags=FLAG_IS_REMOTE_KNOWN | FLAG_PARENT_IS_REMOTE,
    )
    other_sdk = span("consume2", 5, 6, trace=1, parent=producer, unit=OTHER)
    assert candidates([producer, remote, other_sdk]) == []


def test_peers_typical_fan_out_is_the_median_including_parents_without_such_children() -> None:
    spans = []
    for t in range(1, 6):
        root = span("POST /orders", t * 100, t * 100 + 10, trace=t, kind=SpanKind.SERVER)
        spans.append(root)
        if t == 1:
            spans += [span("tick", 200 + 20 * k, 201 + 20 * k, trace=t, parent=root) for k in range(8)]
    got = candidates(spans)
    assert len(got) == 8
    assert {(c.peers, c.typical, c.siblings, c.same_name_late) for c in got} == {(4, 0.0, 8, 8)}


def test_regular_starts_are_a_timer_and_one_late_tick_does_not_change_that() -> None:
    ticks = [k * 15 * MS for k in range(12)]
    assert periodic_cv(ticks) == 0.0
    delayed = [*ticks[:3], ticks[3] + 80 * MS, *[t + 80 * MS for t in ticks[4:]]]
    cv = periodic_cv(delayed)
    assert cv is not None and cv <= DEFAULT.periodic_cv
    irregular = [0, 1, 30, 31, 90, 200, 201, 260, 400]
    cv = periodic_cv([t * MS for t in irregular])
    assert cv is not None and cv > DEFAULT.periodic_cv
    assert periodic_cv([0, 5]) is None


def _timer_leak() -> list[Span]:
    """A flusher set up inside one request: 12 ticks land under it, long after it ended."""
    spans = []
    for t in range(1, 7):
        spans.append(span("POST /orders", t * 40, t * 40 + 8, trace=t, kind=SpanKind.SERVER))
    setup = span("start flusher", 41, 42, trace=1, parent=spans[0])
    spans.append(setup)
    spans += [span("flush_metrics", 60 + 15 * k, 61 + 15 * k, trace=1, parent=setup) for k in range(12)]
    return spans


def test_timer_ticks_under_their_set_up_span_are_leaks_that_should_be_roots() -> None:
    leaks = find_leaks(_timer_leak())
    assert len(leaks) == 12
    assert {lk.wrong_parent.name for lk in leaks} == {"start flusher"}
    assert all(lk.likely_parent is None for lk in leaks)
    assert all(lk.confidence >= 0.9 for lk in leaks)
    assert any("timer's ticks" in w for w in leaks[0].evidence)
    assert "context.with(ROOT_CONTEXT" in " ".join(leaks[0].fix.steps)


def test_one_deferred_child_per_request_is_never_a_leak() -> None:
    spans = []
    for t in range(1, 11):
        root = span("POST /orders", t * 40, t * 40 + 8, trace=t, kind=SpanKind.SERVER)
        spans += [root, span("send receipt", t * 40 + 12, t * 40 + 14, trace=t, parent=root)]
    assert find_leaks(spans) == []


def test_the_likely_parent_is_the_dispatcher_of_one_name_running_when_each_leak_started() -> None:
    spans = []
    subscribe = span("subscribe", 0, 1, trace=1)
    spans.append(subscribe)
    starts = [10, 13, 40, 44, 90, 200, 207, 300]  # irregular: events, not ticks
    publishers = []
    for i, s in enumerate(starts):
        root = span("POST /orders", s - 5, s + 3, trace=100 + i, kind=SpanKind.SERVER)
        pub = span("publish order", s - 0.2, s + 0.1, trace=100 + i, parent=root)
        spans += [root, pub]
        publishers.append(pub)
        spans.append(span("audit order", s, s + 2, trace=1, parent=subscribe))
    leaks = find_leaks(spans)
    assert len(leaks) == len(starts)
    by_start = {lk.span.start: lk for lk in leaks}
    for pub, s in zip(publishers, starts, strict=True):
        got = by_start[T0 + s * MS].likely_parent
        assert got is not None and got.span_id == pub.span_id


def test_the_threshold_is_a_parameter() -> None:
    spans = _timer_leak()
    assert find_leaks(spans, LeakParams(threshold=0.9999999)) == []
