"""Execution units: which process and thread a span ran in, and how two units relate.

Readers hand the resource attributes of each batch to a ``UnitTable``, which interns one
``Unit`` per distinct resource (and per thread seen in span attributes), so millions of spans
share a handful of unit objects.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from enum import Enum

import msgspec

from ctxdoctor.model import Unit

#: Resource attributes that place a span in a process or thread.
RESOURCE_KEYS = frozenset(
    {
        "service.name",
        "service.instance.id",
        "host.name",
        "process.pid",
        "process.parent_pid",
        "thread.id",
        "thread.name",
        "thread.type",
        "telemetry.sdk.language",
    }
)
#: Span attributes that place a span in a thread (semantic conventions, "development").
SPAN_THREAD_KEYS = frozenset({"thread.id", "thread.name"})

Scalar = str | int | float | bool | None


def _as_int(value: Scalar) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_str(value: Scalar) -> str | None:
    return None if value is None else str(value)


class UnitTable:
    """Interns units so that equal descriptions share one object and one resource index."""

    __slots__ = ("_by_resource", "_by_thread")

    def __init__(self) -> None:
        self._by_resource: dict[Hashable, Unit] = {}
        self._by_thread: dict[tuple[int, int | None, str | None], Unit] = {}

    def known(self, key: Hashable) -> Unit | None:
        """The unit of a resource seen before, without decoding its attributes again."""
        return self._by_resource.get(key)

    def resource_unit(self, key: Hashable, attrs: Mapping[str, Scalar]) -> Unit:
        """The unit of a resource. ``key`` identifies the whole resource (all attributes)."""
        unit = self._by_resource.get(key)
        if unit is None:
            unit = Unit(
                service=_as_str(attrs.get("service.name")) or "unknown_service",
                resource=len(self._by_resource),
                instance_id=_as_str(attrs.get("service.instance.id")),
                host=_as_str(attrs.get("host.name")),
                pid=_as_int(attrs.get("process.pid")),
                parent_pid=_as_int(attrs.get("process.parent_pid")),
                thread_id=_as_int(attrs.get("thread.id")),
                thread_name=_as_str(attrs.get("thread.name")),
                thread_type=_as_str(attrs.get("thread.type")),
                language=_as_str(attrs.get("telemetry.sdk.language")),
            )
            self._by_resource[key] = unit
        return unit

    def entries(
        self,
    ) -> tuple[list[tuple[Hashable, Unit]], list[tuple[tuple[int, int | None, str | None], Unit]]]:
        """Everything interned, in order: what ``adopt`` takes (from another process)."""
        return list(self._by_resource.items()), list(self._by_thread.items())

    def adopt(
        self,
        resources: list[tuple[Hashable, Unit]],
        threads: list[tuple[tuple[int, int | None, str | None], Unit]],
    ) -> list[Unit]:
        """This table's units for another table's ``entries`` (a reader process's), in the same
        order: a resource seen here already is the same object; a new one gets the next index
        here, as if this table had read it itself."""
        mine: dict[int, Unit] = {}  # the other table's resource index -> our unit
        out = []
        for key, unit in resources:
            ours = self._by_resource.get(key)
            if ours is None:
                ours = self._by_resource[key] = msgspec.structs.replace(unit, resource=len(self._by_resource))
            mine[unit.resource] = ours
            out.append(ours)
        for (resource, tid, tname), _unit in threads:
            out.append(self.thread_unit(mine[resource], tid, tname))
        return out

    def thread_unit(self, base: Unit, thread_id: Scalar, thread_name: Scalar) -> Unit:
        """The unit of a span whose own attributes name its thread."""
        tid = _as_int(thread_id)
        tname = _as_str(thread_name)
        if tid is None and tname is None:
            return base
        key = (base.resource, tid, tname)
        unit = self._by_thread.get(key)
        if unit is None:
            unit = Unit(
                service=base.service,
                resource=base.resource,
                instance_id=base.instance_id,
                host=base.host,
                pid=base.pid,
                parent_pid=base.parent_pid,
                thread_id=tid if tid is not None else base.thread_id,
                thread_name=tname if tname is not None else base.thread_name,
                thread_type=base.thread_type,
                language=base.language,
            )
            self._by_thread[key] = unit
        return unit


class Boundary(str, Enum):
    """What the lost context had to cross between the dispatching span and the orphan."""

    THREAD = "thread"
    PROCESS = "process"
    ASYNC = "async"


class Relation(Enum):
    SAME_PROCESS = "same process"
    PARENT_CHILD_PROCESS = "parent/child process"
    SAME_SERVICE = "same service, same host"


def same_process(a: Unit, b: Unit) -> bool | None:
    """True/False when the attributes tell, None when they cannot."""
    if a.resource == b.resource:
        return True
    if a.pid is not None and b.pid is not None:
        if a.host is not None and b.host is not None and a.host != b.host:
            return False
        return a.pid == b.pid
    if a.instance_id is not None and b.instance_id is not None and a.instance_id == b.instance_id:
        return True
    return None


def relation(orphan: Unit, parent: Unit) -> Relation | None:
    """How the unit of a suspected orphan relates to the unit of a candidate parent.

    Only related units can hand work to each other: the same process, a parent and a child
    process, or (when process ids are not recorded) the same service on the same host.
    """
    sp = same_process(orphan, parent)
    if sp:
        return Relation.SAME_PROCESS
    if (
        orphan.parent_pid is not None
        and orphan.parent_pid == parent.pid
        and (orphan.host is None or parent.host is None or orphan.host == parent.host)
    ):
        return Relation.PARENT_CHILD_PROCESS
    if orphan.service == parent.service and (orphan.host is None or parent.host is None or orphan.host == parent.host):
        return Relation.SAME_SERVICE
    return None


def boundary(orphan: Unit, parent: Unit, rel: Relation) -> tuple[Boundary, str]:
    """The boundary crossed, and the evidence for it in words."""
    if rel is not Relation.SAME_PROCESS:
        if orphan.pid is not None and parent.pid is not None:
            return Boundary.PROCESS, f"different processes (pid {parent.pid} -> pid {orphan.pid})"
        return Boundary.PROCESS, "different SDK resources of the same service, no shared process id"
    if orphan.thread_id is not None and parent.thread_id is not None:
        if orphan.thread_id != parent.thread_id:
            return Boundary.THREAD, f"same process, thread {parent.thread_id} -> thread {orphan.thread_id}"
        return Boundary.ASYNC, f"same process and thread ({orphan.thread_id})"
    if orphan.thread_name is not None and parent.thread_name is not None:
        if orphan.thread_name != parent.thread_name:
            return Boundary.THREAD, f"same process, thread {parent.thread_name!r} -> {orphan.thread_name!r}"
        return Boundary.ASYNC, f"same process and thread ({orphan.thread_name!r})"
    if orphan.resource != parent.resource:
        # Two SDK instances in one process: each worker thread runs its own SDK.
        return Boundary.THREAD, "same process, separate SDK instances (one per worker thread)"
    lang = orphan.language or parent.language
    if lang == "nodejs":
        # Node.js runs one SDK per thread (a worker's resource differs: its own script), so one
        # resource is one event loop: what is lost there is lost across an async hop.
        return Boundary.ASYNC, "same Node.js thread (one SDK per thread): an async hop"
    if lang == "python":
        # asyncio tasks and callbacks copy contextvars; Python loses context across threads.
        return Boundary.THREAD, "same process, no thread attributes; Python keeps context across await"
    return Boundary.THREAD, "same process, no thread attributes recorded (thread assumed)"
