"""The shared-values evidence on its own (docs/diagnosis.md, "Shared values").

Hand-made spans, labelled as such: each test builds the smallest set of traces that shows one
rule of the link (tokens, which side must carry the whole value, peers, the mirror, the parent
within the linked trace) so that a change that flips it fails here first.
"""

from __future__ import annotations

from ctxdoctor.diagnose import orphans
from ctxdoctor.diagnose import shared_values as sv
from ctxdoctor.findings import Orphan
from ctxdoctor.model import Span, SpanKind, Unit
from ctxdoctor.units import Boundary

MS = 1_000_000
UNIT = Unit(service="svc", resource=0, pid=1, host="a")
OTHER_HOST = Unit(service="elsewhere", resource=1, pid=2, host="b")


def span(trace: int, sid: int, name: str, start_ms: float, end_ms: float, *values: str, parent: int = 0,
         kind: int = SpanKind.INTERNAL, unit: Unit = UNIT) -> Span:
    return Span(trace_id=trace, span_id=sid, parent_span_id=parent, name=name, kind=kind,
                start=int(start_ms * MS), end=int(end_ms * MS), flags=0, unit=unit, values=values)


def links(spans: list[Span]) -> dict[int, sv.SharedValueLink]:
    suspects = [s for s in spans if orphans.is_suspect(s)]
    return sv.find_links(spans, suspects, orphans._group_of)


def work(i: int, start_ms: float, *values: str) -> Span:
    return span(1000 + i, 1000 + i, "handle_task", start_ms, start_ms + 5, *values)


def dispatcher(i: int, start_ms: float, *values: str) -> Span:
    return span(i, i, "process_batch", start_ms, start_ms + 2, *values)


# --- tokens --------------------------------------------------------------------------------------


def test_a_value_is_its_own_token_and_its_pieces_between_separators_are_too() -> None:
    assert sv.tokens("64-3") == {"64-3"}
    assert sv.tokens("64-3/2") == {"64-3/2", "64-3"}  # "2" is too short a piece to be an id
    assert "c2eda48c590d.png" in sv.tokens("https://assets.example.com/images/c2eda48c590d.png")
    assert sv.tokens("7") == {"7"}  # a whole value is a token however short


# --- the link ------------------------------------------------------------------------------------


def test_work_that_starts_after_its_dispatcher_ended_is_linked_by_the_id_they_share() -> None:
    # Fire-and-forget: no timing links these (the dispatcher ended seconds before the work).
    spans = []
    for i in range(10):
        spans += [dispatcher(i, i * 100, "job.id", f"j-{i}"), work(i, i * 100 + 3000, "job.id", f"j-{i}")]
    found = links(spans)
    assert len(found) == 10
    for link in found.values():
        assert link.parent.trace_id == link.root.trace_id - 1000
        assert link.past_traces == 1
    # Ten past links and no future one: one less (0 + 1) / (10 + 1).
    assert next(iter(found.values())).confidence == 1 - 1 / 11


def test_the_dispatcher_itself_has_only_a_future_link_and_is_not_linked() -> None:
    spans = [dispatcher(1, 0, "job.id", "j-1"), work(1, 3000, "job.id", "j-1")]
    found = links(spans)
    assert [link.root.name for link in found.values()] == ["handle_task"]


def test_a_batch_id_finds_its_items_but_items_are_not_each_others_dispatchers() -> None:
    # The items carry "b-1/k": they share the piece "b-1" with each other (siblings) and with the
    # dispatcher, which carries it whole. Only the dispatcher's side has the whole value.
    spans = [dispatcher(1, 0, "batch.id", "b-1")]
    spans += [work(k, 10 + k, "task.id", f"b-1/{k:03d}") for k in range(5)]
    found = links(spans)
    assert len(found) == 5
    assert {link.parent.span_id for link in found.values()} == {1}
    assert {(link.root_key, link.parent_key) for link in found.values()} == {("task.id", "batch.id")}


def test_items_of_one_batch_with_the_same_whole_value_are_peers_not_dispatchers() -> None:
    # A map over a batch: every item carries the batch's value whole, as the dispatcher does.
    # An earlier item heads a trace of the root's own group: a peer, never the parent.
    spans = [dispatcher(1, 0, "url.full", "https://x/a.png")]
    spans += [work(k, 10 + k, "url.full", "https://x/a.png") for k in range(4)]
    found = links(spans)
    assert len(found) == 4 and {link.parent.span_id for link in found.values()} == {1}


def test_values_shared_both_ways_by_chance_give_no_confidence() -> None:
    # Background roots that share values with the traces around them, earlier and later alike
    # (a file read again): the first five have past and future links, the last five (nothing
    # recorded after them) past ones only. Half past, half both ways: what chance gives.
    spans = []
    for i in range(10):
        spans.append(span(i, i, "GET /files", i * 100, i * 100 + 2, "file.name", f"f{i % 5}.csv",
                          kind=SpanKind.SERVER))
        spans.append(span(100 + i, 100 + i, "cleanup", i * 100 + 50, i * 100 + 52, "file.name", f"f{i % 5}.csv"))
    found = links(spans)
    assert len(found) == 5 and {link.confidence for link in found.values()} == {0.0}


def test_the_mirror_takes_future_links_as_the_chance_share_of_the_past_ones() -> None:
    # Six roots linked to an earlier trace only, three to a later one only (chance goes both
    # ways, so about three of the six are chance too): one less (3 + 1) / (6 + 1).
    spans = []
    for i in range(6):
        spans += [span(i, i, "enqueue", i * 100, i * 100 + 1, "k", f"v{i}"), work(i, i * 100 + 50, "k", f"v{i}")]
    for i in range(6, 9):
        later = span(i, i, "GET /later", i * 100 + 50, i * 100 + 51, "k", f"v{i}", kind=SpanKind.SERVER)
        spans += [work(i, i * 100, "k", f"v{i}"), later]
    found = links(spans)
    assert len(found) == 6
    assert {round(link.confidence, 6) for link in found.values()} == {round(1 - 4 / 7, 6)}
    assert {(link.group_past, link.group_future) for link in found.values()} == {(6, 3)}


def test_only_related_units_are_linked() -> None:
    # The same id in an unrelated process (another service on another host) is no hand-off in
    # this process: timing's candidates obey the same rule.
    spans = [span(1, 1, "process_batch", 0, 2, "job.id", "j-1", unit=OTHER_HOST), work(1, 3000, "job.id", "j-1")]
    assert links(spans) == {}


def test_a_constant_of_the_app_is_not_a_token() -> None:
    # A value on more spans than the cap (a method, a host) says nothing about which trace.
    many = sv._MAX_TOKEN_SPANS + 1
    spans = [span(i, i, "SELECT", i, i + 0.5, "db.system", "postgresql") for i in range(many)]
    spans.append(work(1, many + 10, "db.system", "postgresql"))
    assert links(spans) == {}


def test_within_the_linked_trace_the_busy_span_is_the_parent_not_the_entry_that_carries_the_value() -> None:
    entry = span(1, 1, "GET /thumbnails/:id", 0, 100, "url.path", "/thumbnails/abc123", kind=SpanKind.SERVER)
    busy = span(1, 2, "process_data", 10, 90, parent=1)
    later = span(1, 3, "respond", 95, 99, parent=1)
    root = work(1, 20, "image.id", "abc123")
    link = links([entry, busy, later, root])[id(root)]
    assert link.parent is busy and link.carrier is entry
    # Nothing busy at the root's start (fire-and-forget): the carrier is the parent.
    late_root = work(2, 500, "image.id", "abc123")
    link = links([entry, busy, later, late_root])[id(late_root)]
    assert link.parent is entry


def test_several_earlier_traces_with_the_value_share_the_parent_confidence() -> None:
    spans = [dispatcher(1, 0, "job.id", "j-1"), dispatcher(2, 10, "job.id", "j-1"), work(1, 3000, "job.id", "j-1")]
    (link,) = links(spans).values()
    assert link.past_traces == 2 and link.parent.span_id == 2  # the latest
    assert sv.linked_orphan(link).parent_confidence == 0.5


# --- the finding ---------------------------------------------------------------------------------


def test_the_evidence_names_the_keys_never_the_values() -> None:
    secret = "tok_live_4242424242"
    spans = [dispatcher(1, 0, "session.token", secret), work(1, 3000, "session.token", secret)]
    (link,) = links(spans).values()
    o = sv.linked_orphan(link)
    text = " ".join(o.evidence)
    assert "session.token" in text and secret not in text and "4242" not in text


def _timing(root: Span, parent: Span, confidence: float, parent_confidence: float = 0.5) -> Orphan:
    return Orphan(span=root, parent=parent, boundary=Boundary.THREAD, boundary_evidence="", confidence=confidence,
                  parent_confidence=parent_confidence, candidates=2, evidence=("timing",))


def test_a_link_to_the_timings_trace_raises_its_confidence_and_keeps_its_parent() -> None:
    d, r = dispatcher(1, 0, "job.id", "j-1"), work(1, 1, "job.id", "j-1")
    d_child = span(1, 5, "step", 0.5, 1.8, parent=1)
    (link,) = links([d, d_child, r]).values()
    (merged,) = sv.with_links([_timing(r, d_child, 0.3)], {id(r): link})
    assert merged.parent is d_child and merged.confidence == link.confidence
    assert merged.evidence[0] == "timing" and len(merged.evidence) > 1


def _disagreeing() -> tuple[Span, Span, Span, sv.SharedValueLink]:
    # Eleven roots linked by their ids (confidence 1 - 1/12), one of which the timing placed
    # under a busy span of another trace.
    spans = []
    for i in range(11):
        spans += [dispatcher(i, i * 100, "job.id", f"j-{i}"), work(i, i * 100 + 3000, "job.id", f"j-{i}")]
    other = dispatcher(77, 2990)
    found = links([*spans, other])
    r = spans[1]
    return r, spans[0], other, found[id(r)]


def test_where_link_and_timing_disagree_the_likelier_parent_is_taken_with_the_surer_confidence() -> None:
    r, d, other, link = _disagreeing()
    assert link.parent is d and link.confidence == 1 - 1 / 12
    # The timing is fairly sure of its parent; the link is surer: the link's parent.
    (merged,) = sv.with_links([_timing(r, other, 0.95, parent_confidence=0.8)], {id(r): link})
    assert merged.parent is d and merged.confidence == 0.95


def test_a_weak_link_against_the_timing_leaves_its_parent_but_makes_it_ambiguous() -> None:
    # One root linked alone: even odds (1 - 1/2) that the value is no chance.
    d, r, other = dispatcher(1, 0, "job.id", "j-1"), work(1, 3000, "job.id", "j-1"), dispatcher(7, 2990)
    (link,) = links([d, r, other]).values()
    assert link.confidence == 0.5
    (kept,) = sv.with_links([_timing(r, other, 0.3, parent_confidence=0.9)], {id(r): link})
    # At most one of the two parents is right: the timing's at most one less the link's odds.
    assert kept.parent is other and kept.parent_confidence == 0.5 and kept.confidence == 0.5
    (taken,) = sv.with_links([_timing(r, other, 0.3, parent_confidence=0.3)], {id(r): link})
    assert taken.parent is d


def test_a_root_the_timing_did_not_find_is_added() -> None:
    d, r = dispatcher(1, 0, "job.id", "j-1"), work(1, 3000, "job.id", "j-1")
    found = links([d, r])
    assert [o.span for o in sv.with_links([], found)] == [r]


def test_find_orphans_uses_the_links_only_when_the_model_says_so() -> None:
    spans = []
    for i in range(12):
        spans += [dispatcher(i, i * 100, "job.id", f"j-{i}"), work(i, i * 100 + 3000, "job.id", f"j-{i}")]
    on, _ = orphans.find_orphans(spans, orphans.ModelParams(shared_values=True))
    off, _ = orphans.find_orphans(spans, orphans.ModelParams(shared_values=False))
    assert {o.span.name for o in on if o.confidence >= 0.85} == {"handle_task"}
    assert not [o for o in off if o.confidence >= 0.85]
