"""Walking a dump trace by trace without an index of every span, and only the traces that matter.

A dict of every span id would cost ~100 bytes per span (the diagnosis targets ~340 in all), and
a sorted copy of the whole span list costs ~24 bytes per span while it is sorted, more than
the rest of the diagnosis holds at its peak. So the leak and silent-worker passes first pick
their traces (``flag``): the dump is cut into slices, each span's parent is looked up in its
own slice (a parent is nearly always exported near its children), and each pass's filter keeps
the traces that may hold what it looks for. Only those traces are then sorted (``subset``) and
walked as before, with parents looked up in a small dict per trace.

The loops over every span read the fields by name: the interpreter specialises that attribute
access, which makes them faster than ``map`` with an ``attrgetter`` over the same spans. They
are comprehensions, except ``flag``'s, where one plain loop does what a comprehension per
filter would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby
from operator import attrgetter
from typing import NamedTuple, Protocol

from ctxdoctor.model import Span, Unit

TRACE = attrgetter("trace_id")
_SPAN = attrgetter("span_id")
PARENT = attrgetter("parent_span_id")
START = attrgetter("start")
END = attrgetter("end")
UNIT = attrgetter("unit")
NAME = attrgetter("name")

#: Spans per slice: small enough that a slice's spans and its dict of ids stay in the CPU's
#: cache while the filters make their several passes over them (each pass over spans that
#: are not cached waits on memory for every span), large enough that few traces straddle two
#: slices (those are walked whole, by every pass).
_SLICE = 1 << 13

#: What a lookup finds for a parent id that is not in the slice.
NOWHERE = Span(
    trace_id=-1, span_id=-1, parent_span_id=-1, name="", kind=0, start=0, end=1 << 200, flags=0, unit=Unit("", -1)
)


class Slice(NamedTuple):
    """What the parent lookups in one slice found, sorted for the filters, in dump order."""

    #: How many spans the slice has.
    size: int
    #: The roots, and the spans whose parent id is not in the slice.
    alone: list[Span]
    #: (span, parent) where the parent is in the slice, in another unit.
    crossing: list[tuple[Span, Span]]
    #: (span, parent) where the parent is in the slice and ended before the span started.
    late: list[tuple[Span, Span]]


class Filter(Protocol):
    """A pass's filter: called with each ``Slice`` (the parents are those found in the slice),
    it collects in ``traces`` the ids of the traces the pass must walk. It may keep too many,
    never too few: for a trace that lies in one slice, whose span ids are all distinct, a parent
    found in the slice is the one the trace's own index would find, if it is in the same trace."""

    traces: set[int]
    #: The traces the slices could not settle (``flag`` sets it; they are in ``traces`` too).
    unsettled: set[int]

    def __call__(self, found: Slice) -> None: ...


def flag(spans: Sequence[Span], *filters: Filter) -> int:
    """Run ``filters`` over ``spans`` slice by slice; return the number of distinct traces.

    Traces the slices cannot settle go to every filter: those found in two slices or more, and
    every trace of a slice in which a span id repeats (a lookup there could find the wrong one).

    Each span's parent is looked up once, and the span sorted in the same loop into the few
    lists the filters read (most spans are in none): one loop over the slice costs less than a
    list of every span's parent with a comprehension over it for each filter.
    """
    seen: set[int] = set()
    unsettled: set[int] = set()
    for i in range(0, len(spans), _SLICE):
        part = spans[i : i + _SLICE]
        if not isinstance(part, list):
            part = list(part)
        here = {s.trace_id for s in part}
        unsettled |= here & seen
        seen |= here
        by_id = {s.span_id: s for s in part}
        if len(by_id) < len(part):
            unsettled |= here
            continue
        get = by_id.get
        found = Slice(len(part), [], [], [])
        alone, crossing, late = found.alone.append, found.crossing.append, found.late.append
        for c in part:
            q = get(c.parent_span_id, NOWHERE)
            if q is NOWHERE:
                alone(c)
                continue
            if not c.parent_span_id:  # a root whose id 0 is a (malformed) span's in the slice
                alone(c)
            if c.unit is not q.unit:
                crossing((c, q))
            if c.start > q.end:
                late((c, q))
        for f in filters:
            f(found)
    for f in filters:
        f.traces |= unsettled
        f.unsettled = unsettled
    return len(seen)


def subset(spans: Sequence[Span], trace_ids: set[int]) -> list[Span]:
    """The spans of ``trace_ids`` in trace order (``by_trace`` of only those), for ``traces``."""
    if not trace_ids:
        return []
    return by_trace([s for s in spans if s.trace_id in trace_ids])


def named(spans: Sequence[Span], names: set[str]) -> list[Span]:
    """The spans with one of ``names``, in dump order."""
    return [s for s in spans if s.name in names]


def by_trace(spans: Sequence[Span]) -> list[Span]:
    """The spans in trace order: sort once, walk as often as needed with ``traces``."""
    return sorted(spans, key=TRACE)


def traces(ordered: list[Span]) -> Iterator[list[Span]]:
    """The spans of each trace with at least two spans (a lone span has no parent to judge)."""
    for _, group in groupby(ordered, key=TRACE):
        trace = list(group)
        if len(trace) > 1:
            yield trace


def index(trace: list[Span]) -> dict[int, Span]:
    return dict(zip(map(_SPAN, trace), trace, strict=True))
