"""The project's own span model: what every reader produces and every analysis consumes.

Records are msgspec Structs: immutable, slotted and created in ~100 ns, and ``gc=False`` keeps
millions of them out of the cyclic garbage collector (they hold no cycles). Ids are ints, not
hex strings: a 64-bit span id costs 36 bytes as an int against 65 as text, and ints hash and
compare fast. Hex appears only at the edges (readers and renderers).
"""

from __future__ import annotations

from enum import IntEnum

import msgspec


class SpanKind(IntEnum):
    UNSPECIFIED = 0
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


# Span.flags bits (trace.proto, SpanFlags).
FLAG_IS_REMOTE_KNOWN = 0x100
FLAG_PARENT_IS_REMOTE = 0x200

#: Kinds that are ordinary entry points of a trace: a root of these kinds is expected.
ENTRY_KINDS = frozenset({SpanKind.SERVER, SpanKind.CONSUMER})


class Unit(msgspec.Struct, frozen=True, gc=False):
    """An execution unit: one thread (or, when threads are not visible, one process) of a service.

    Built from resource attributes plus the span attributes ``thread.id``/``thread.name``. Any
    field may be unknown (``None``); a distinct resource is always a distinct ``resource`` index,
    so units never merge across SDK instances that describe themselves differently.
    """

    service: str
    resource: int
    instance_id: str | None = None
    host: str | None = None
    pid: int | None = None
    parent_pid: int | None = None
    thread_id: int | None = None
    thread_name: str | None = None
    thread_type: str | None = None
    language: str | None = None

    def label(self) -> str:
        """A short human label: ``svc pid 41 thread 2 (worker)``."""
        parts = [self.service]
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.thread_id is not None:
            parts.append(f"thread {self.thread_id}")
        elif self.thread_name:
            parts.append(f"thread {self.thread_name}")
        if self.thread_type:
            parts.append(f"({self.thread_type})")
        return " ".join(parts)


class Span(msgspec.Struct, frozen=True, gc=False):
    """One span, reduced to what the diagnosis needs. Times are Unix nanoseconds."""

    trace_id: int
    span_id: int
    parent_span_id: int  # 0 for a root span
    name: str
    kind: int
    start: int
    end: int
    flags: int
    unit: Unit
    links: tuple[int, ...] = ()  # trace ids this span links to
    status: int = 0  # StatusCode: 0 unset, 1 ok, 2 error
    #: The span's string and integer attributes, flattened (key, value, key, value...), when the
    #: reader was asked for them (``readers.read_paths(values=...)``): an id the app put on both
    #: the dispatching span and the work links them where timing cannot. Empty otherwise.
    values: tuple[str, ...] = ()

    @property
    def is_root(self) -> bool:
        return self.parent_span_id == 0

    @property
    def duration(self) -> int:
        return self.end - self.start

    @property
    def parent_remote(self) -> bool | None:
        """What the SDK recorded about the parent: True remote, False local, None unknown."""
        if self.flags & FLAG_IS_REMOTE_KNOWN:
            return bool(self.flags & FLAG_PARENT_IS_REMOTE)
        return None


def trace_hex(trace_id: int) -> str:
    return f"{trace_id:032x}"


def span_hex(span_id: int) -> str:
    return f"{span_id:016x}"
