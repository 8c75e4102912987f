"""Shared values: a root that carries an id an earlier trace also carries was handed that id.

Apps put the item of work on both sides of a hand-off: the job, task, message or request id,
the file name, the URL. When the context does not cross, that value is the one thread left
between the work's root and its dispatcher, and it holds where timing cannot: work that starts
seconds after its dispatcher ended (fire-and-forget, a queue), or one dispatcher among thirty
busy ones. The spans keep their values only where the reader was asked to (``Span.values``).

**A link.** A suspect root R and a span P of another trace, in a related unit (as for timing:
the same process, a parent and child process, the same service on the same host), share a
*token*: a whole attribute value, or a piece of one between separators (``/``, ``?``, ``=``...)
so that a batch id finds its items' ``batch/3`` and an id its URL. One side must carry the token
as its whole value: items of one batch (``b/1``, ``b/2``) share a piece, not an id, and are
siblings, not each other's dispatcher; so are the traces of other roots of R's own group (name
shape and service), which carry their batch's value alike. Of R's tokens the one carried by the fewest other traces
speaks; its spans are on R's *past* side if they started before R, on its *future* side after.

**Against chance.** Two legitimate roots that share a value by coincidence (a user id, a file
read twice, a random number) are one earlier and one later: each pair gives one root a past
link and the other a future link, whichever roots they are. Handed-over work only has past
links: its dispatcher came first. So per group of roots (service and name shape) the roots
with a future link (or both) stand for the chance links among those with a past link, and a
root's confidence is one less that share, ``(F + 1) / (P + 1)`` with one pseudo-link each
(``_MIRROR_PRIOR``). The value names the trace: the latest of the past side's traces. Within it,
the parent is the innermost span busy when R started, if any (the dispatcher, where the value
is often on the entry span), else the span that carries the value; with ``m`` past traces
carrying the token, each is the parent with ``1 / m``.

Values are never shown: they may be secrets. The evidence names the attribute keys.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence

import msgspec

from ctxdoctor.findings import Orphan
from ctxdoctor.model import Span, Unit
from ctxdoctor.units import Relation, boundary, relation

#: Characters that separate the pieces of a value: paths, query strings, lists, key=value.
_SEPARATORS = re.compile(r"[/?&=#:,;|\s]+")
#: Pieces shorter than this are not tokens (an index, a unit letter); whole values always are.
_MIN_PIECE = 3
#: A token on more spans than this is a constant of the app (a method, a route, a host name),
#: not an item handed over; it is not looked at (which also bounds the work per root).
_MAX_TOKEN_SPANS = 256
#: Pseudo-links on each side of the mirror: a group with one past link and no future link is
#: even odds, not certain.
_MIRROR_PRIOR = 1.0
_MS = 1_000_000


class SharedValueLink(msgspec.Struct, frozen=True, gc=False):
    """The best value link of one suspect root."""

    root: Span
    parent: Span  # the innermost span of the carrier's trace busy at the root's start, or the carrier
    carrier: Span  # the latest span of an earlier trace that carries the token
    root_key: str  # the root's attribute that carries it
    parent_key: str  # the parent's attribute that carries it
    past_traces: int  # earlier traces carrying the token (the parent is one of them)
    confidence: float  # one less the group's share of chance links (the mirror)
    group_past: int  # roots of the group with past links only
    group_future: int  # roots of the group with a future link


def tokens(value: str) -> set[str]:
    """The value itself and its pieces between separators (``_MIN_PIECE`` characters or more)."""
    out = {value}
    if _SEPARATORS.search(value):
        out.update(p for p in _SEPARATORS.split(value) if len(p) >= _MIN_PIECE)
    return out


class _Entry(msgspec.Struct, frozen=True, gc=False):
    start: int
    span: Span
    key: str
    whole: bool  # the token is the span's whole value


def _index(spans: Iterable[Span], wanted: set[str]) -> dict[str, list[_Entry]]:
    """Token -> the spans carrying it, by start time; only the ``wanted`` tokens (a root's)."""
    index: dict[str, list[_Entry]] = defaultdict(list)
    cut: dict[str, tuple[str, ...]] = {}  # value -> its wanted tokens: values repeat
    for s in spans:
        vals = s.values
        for i in range(1, len(vals), 2):
            value = vals[i]
            mine = cut.get(value)
            if mine is None:
                mine = cut[value] = tuple(t for t in tokens(value) if t in wanted)
            for t in mine:
                index[t].append(_Entry(s.start, s, vals[i - 1], t == value))
    for entries in index.values():
        entries.sort(key=lambda e: e.start)
    return index


def find_links(
    spans: Sequence[Span], suspects: Sequence[Span], group: Callable[[Span], Hashable]
) -> dict[int, SharedValueLink]:
    """The value link of each suspect root that has one on its past side only, by ``id(root)``.

    ``spans``: every span (those without values are skipped); ``suspects``: the roots that could
    be lost context (``orphans.is_suspect``); ``group``: a root's group for the mirror (the
    orphan model's, so that both calibrate over the same roots).
    """
    roots = [r for r in suspects if r.values]
    if not roots:
        return {}
    wanted = {t for r in roots for v in r.values[1::2] for t in tokens(v)}
    index = _index((s for s in spans if s.values), wanted)
    rel_cache: dict[tuple[int, int], Relation | None] = {}

    def related(a: Unit, b: Unit) -> bool:
        key = (id(a), id(b))
        if key not in rel_cache:
            rel_cache[key] = relation(a, b)
        return rel_cache[key] is not None

    # Work items of one kind carry their batch's value alike: a trace headed by a root of the
    # root's own group is a peer, not its dispatcher (as for timing's candidates).
    head = {r.trace_id: group(r) for r in suspects}
    # Per root: (past traces, future traces, the past side's latest entry, the root's key)
    found: dict[int, tuple[int, int, _Entry | None, str]] = {}  # by id(root)
    for r in roots:
        best: tuple[int, int, _Entry | None, str] | None = None
        mine_group = group(r)
        vals = r.values
        mine: dict[str, tuple[str, bool]] = {}
        for i in range(0, len(vals) - 1, 2):
            for t in tokens(vals[i + 1]):
                if t not in mine or t == vals[i + 1]:
                    mine[t] = (vals[i], t == vals[i + 1])
        for t, (rkey, r_whole) in mine.items():
            entries = index.get(t, ())
            if len(entries) > _MAX_TOKEN_SPANS or len(entries) < 2:
                continue
            past: set[int] = set()
            future: set[int] = set()
            latest: _Entry | None = None
            split = bisect_right(entries, r.start, key=lambda e: e.start)
            for k, e in enumerate(entries):
                s = e.span
                if (
                    s.trace_id == r.trace_id
                    or not (e.whole or r_whole)
                    or head.get(s.trace_id) == mine_group
                    or not related(r.unit, s.unit)
                ):
                    continue
                if k < split:
                    past.add(s.trace_id)
                    latest = e  # entries are by start: the last one kept is the latest
                else:
                    future.add(s.trace_id)
            m = len(past) + len(future)
            if m and (best is None or m < best[0] + best[1]):
                best = (len(past), len(future), latest, rkey)
        if best is not None:
            found[id(r)] = best
    # The mirror, per group: future links measure the chance links among the past ones.
    past_n: dict[Hashable, int] = defaultdict(int)
    future_n: dict[Hashable, int] = defaultdict(int)
    by_id = {id(r): r for r in roots}
    for sid, (p, f, _, _) in found.items():
        g = group(by_id[sid])
        if f:
            future_n[g] += 1
        elif p:
            past_n[g] += 1
    kept = {sid: v for sid, v in found.items() if v[2] is not None and v[0] and not v[1]}
    # The value names the trace; within it, the span busy when the root started (the innermost)
    # is the dispatcher more often than the span that carries the value (often the entry span).
    linked_traces = {v[2].span.trace_id for v in kept.values() if v[2] is not None}
    by_trace: dict[int, list[Span]] = defaultdict(list)
    for s in spans:
        if s.trace_id in linked_traces:
            by_trace[s.trace_id].append(s)
    links: dict[int, SharedValueLink] = {}
    for sid, (p, _, latest, rkey) in kept.items():
        assert latest is not None
        r = by_id[sid]
        busy = [s for s in by_trace[latest.span.trace_id] if s.start <= r.start <= s.end and related(r.unit, s.unit)]
        parent = max(busy, key=lambda s: s.start) if busy else latest.span
        g = group(r)
        conf = max(0.0, 1.0 - (future_n[g] + _MIRROR_PRIOR) / (past_n[g] + _MIRROR_PRIOR))
        links[sid] = SharedValueLink(r, parent, latest.span, rkey, latest.key, p, conf, past_n[g], future_n[g])
    return links


def _evidence(link: SharedValueLink) -> tuple[str, ...]:
    r, p = link.root, link.carrier
    lead = (
        f"its {link.root_key!r} value (or a part of it) is also on {p.name!r}"
        if link.root_key == link.parent_key
        else f"its {link.root_key!r} value (or a part of it) is the {link.parent_key!r} of {p.name!r}"
    )
    ev = [f"{lead}, which started {(r.start - p.start) / _MS:.1f} ms before it in another trace"]
    if link.parent is not p:
        ev.append(f"{link.parent.name!r} of that trace was busy when it started")
    if link.past_traces > 1:
        ev.append(f"{link.past_traces} earlier traces carry that value; the latest is taken")
    ev.append(
        f"no later trace carries it; of these roots {link.group_past} share a value only with earlier "
        f"traces and {link.group_future} with later ones (chance links go both ways)"
    )
    return tuple(ev)


def linked_orphan(link: SharedValueLink) -> Orphan:
    """The finding a value link makes on its own."""
    rel = relation(link.root.unit, link.parent.unit)
    assert rel is not None  # links are only made between related units
    bnd, why = boundary(link.root.unit, link.parent.unit, rel)
    return Orphan(
        span=link.root,
        parent=link.parent,
        boundary=bnd,
        boundary_evidence=why,
        confidence=link.confidence,
        parent_confidence=1.0 / link.past_traces,
        candidates=link.past_traces,
        evidence=_evidence(link),
    )


def with_links(orphans: list[Orphan], links: dict[int, SharedValueLink]) -> list[Orphan]:
    """The timing's findings (on the same span objects) with the value links: a link adds
    confidence where it names the timing's trace. Where it names another, the likelier parent is
    taken (see below). Either way the finding has the higher of the two confidences that the root
    was handed over."""
    if not links:
        return orphans
    out: list[Orphan] = []
    done: set[int] = set()
    for o in orphans:
        link = links.get(id(o.span))
        if link is None:
            out.append(o)
            continue
        done.add(id(o.span))
        if o.parent is not None and o.parent.trace_id == link.parent.trace_id:
            if link.confidence > o.confidence:
                o = msgspec.structs.replace(
                    o,
                    confidence=link.confidence,
                    parent_confidence=max(o.parent_confidence, 1.0 / link.past_traces),
                    evidence=o.evidence + _evidence(link),
                )
            out.append(o)
        else:
            # They disagree on the trace: at most one is right, so the timing's parent is right
            # with at most one less the link's chance of being right. The likelier parent is
            # taken, and either way the root was handed over as surely as the surer of the two.
            by_value = link.confidence / link.past_traces
            by_timing = min(o.parent_confidence, 1.0 - by_value)
            conf = max(o.confidence, link.confidence)
            if by_value > by_timing:
                out.append(msgspec.structs.replace(linked_orphan(link), confidence=conf))
            else:
                out.append(
                    msgspec.structs.replace(
                        o, confidence=conf, parent_confidence=by_timing, evidence=o.evidence + _evidence(link)
                    )
                )
    out.extend(linked_orphan(link) for sid, link in links.items() if sid not in done)
    return out
