"""Walking a dump trace by trace without an index of every span.

A dict of every span id would cost ~100 bytes per span (the diagnosis targets ~340 in all), so the
leak and silent-worker passes sort one copy of the span list by trace (8 bytes a span) and look
parents up in a small dict per trace. Both the grouping and the dict are built by C loops.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby
from operator import attrgetter

from ctxdoctor.model import Span

_TRACE = attrgetter("trace_id")
_SPAN = attrgetter("span_id")
UNIT = attrgetter("unit")
NAME = attrgetter("name")


def by_trace(spans: Sequence[Span]) -> list[Span]:
    """The spans in trace order: sort once, walk as often as needed with ``traces``."""
    return sorted(spans, key=_TRACE)


def traces(ordered: list[Span]) -> Iterator[list[Span]]:
    """The spans of each trace with at least two spans (a lone span has no parent to judge)."""
    for _, group in groupby(ordered, key=_TRACE):
        trace = list(group)
        if len(trace) > 1:
            yield trace


def index(trace: list[Span]) -> dict[int, Span]:
    return dict(zip(map(_SPAN, trace), trace, strict=True))
