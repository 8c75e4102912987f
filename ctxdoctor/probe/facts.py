"""The probe's side file, decoded once into immutable records.

One JSON object per line, appended by every process and worker thread the command ran (see
``node/probe.cjs`` and ``python/_ctxdoctor_probe.py``). A line cut short by a process killed
mid-write, or one that is not the probe's, is skipped and counted: the facts only ever add
certainty to a diagnosis that stands without them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

from ctxdoctor.findings import DispatchSite


class _Ref(msgspec.Struct, frozen=True):
    trace: str
    span: str


class _Site(msgspec.Struct, frozen=True):
    file: str
    line: int
    column: int | None = None
    function: str | None = None


class _Line(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every field any fact may carry; which are set depends on ``ev``."""

    ev: str
    pid: int
    rt: str
    t: int | str = 0
    t_posted: int | str | None = None  # when a pool's task was sent on (after waiting in its queue)
    tid: int | None = None
    id: str | None = None
    api: str = ""
    span: _Ref | str | None = None
    trace: str | None = None
    parent: str | None = None
    carrier: bool = False
    site: _Site | None = None
    target_tid: int | None = None
    child_pid: int | None = None
    task: bool = True
    dispatch: str | None = None
    name: str = ""
    main: bool | None = None
    ppid: int | None = None
    argv: list[str] = []
    sdk: bool | None = None
    command: str = ""
    event: str = ""
    bound: bool = False


class Dispatch(msgspec.Struct, frozen=True):
    """Work handed to another thread or process."""

    id: str
    runtime: str
    api: str
    t: int
    pid: int
    tid: int | None
    span: tuple[int, int] | None  # (trace id, span id) active at the dispatch
    carrier: bool
    site: DispatchSite | None
    target_tid: int | None  # same process, another thread (Node.js worker, Python thread)
    child_pid: int | None  # another process
    task: bool  # the app's own call (not a pool's internal set-up)


class Registration(msgspec.Struct, frozen=True):
    """A callback set up inside a span that runs every later call in that span's context: a
    listener bound with ``context.bind``, an interval set up while the span was active."""

    runtime: str
    api: str  # EventEmitter.on, EventEmitter.once, ..., setInterval
    t: int
    pid: int
    tid: int | None
    span: tuple[int, int]  # (trace id, span id) whose context the callback keeps
    site: DispatchSite | None
    event: str  # the event's name, for a listener
    bound: bool  # bound with context.bind (not only set up while the span was active)


class Start(msgspec.Struct, frozen=True):
    """A span that started in a thread or process: every root, and the first span of a dispatch."""

    runtime: str
    t: int
    pid: int
    tid: int | None
    trace_id: int
    span_id: int
    parent_span_id: int
    dispatch: str | None
    name: str
    main: bool  # on the main thread of its process


class Unit(msgspec.Struct, frozen=True):
    """A process or worker thread the probe ran in."""

    runtime: str
    pid: int
    tid: int | None
    main: bool
    ppid: int | None
    command: str
    first_t: int
    last_t: int
    sdk: bool
    exited: bool


class SeenProcess(msgspec.Struct, frozen=True):
    """A process of the command's tree, as ``runner/ptree.py`` sampled it (any program, probed or not)."""

    pid: int
    parent_pid: int | None
    command: str
    started: float  # Unix seconds
    last_seen: float
    has_children: bool


class Facts(msgspec.Struct, frozen=True):
    dispatches: tuple[Dispatch, ...]
    starts: tuple[Start, ...]
    units: tuple[Unit, ...]
    skipped_lines: int = 0
    processes: tuple[SeenProcess, ...] = ()
    registrations: tuple[Registration, ...] = ()


def _site(s: _Site | None) -> DispatchSite | None:
    if s is None:
        return None
    return DispatchSite(file=s.file, line=s.line, column=s.column, function=s.function or "")


def _ref(r: _Ref | str | None) -> tuple[int, int] | None:
    if not isinstance(r, _Ref):
        return None
    try:
        return int(r.trace, 16), int(r.span, 16)
    except ValueError:
        return None


def decode(lines: Iterable[bytes]) -> Facts:
    dec = msgspec.json.Decoder(_Line)
    dispatches: list[Dispatch] = []
    registrations: list[Registration] = []
    starts: list[Start] = []
    units: dict[tuple[int, int | None], dict[str, object]] = {}
    skipped = 0

    def unit(rec: _Line) -> dict[str, object]:
        key = (rec.pid, rec.tid if rec.rt == "node" else None)
        u = units.get(key)
        t = int(rec.t)
        if u is None:
            u = units[key] = {
                "runtime": rec.rt,
                "pid": rec.pid,
                "tid": key[1],
                "main": rec.rt == "python" or rec.tid == 0,
                "ppid": None,
                "command": "",
                "first_t": t,
                "last_t": t,
                "sdk": False,
                "exited": False,
            }
        u["first_t"] = min(int(u["first_t"]), t)  # type: ignore[call-overload]
        u["last_t"] = max(int(u["last_t"]), t)  # type: ignore[call-overload]
        return u

    for raw in lines:
        if not raw.strip():
            continue
        try:
            rec = dec.decode(raw)
            t = int(rec.t)
            if rec.t_posted is not None:
                int(rec.t_posted)
        except (msgspec.DecodeError, ValueError):
            skipped += 1
            continue
        u = unit(rec)
        if rec.ev in ("proc", "unit"):
            if rec.main is not None:
                u["main"] = rec.main
            u["ppid"] = rec.ppid
            u["command"] = " ".join(rec.argv)
            u["sdk"] = bool(u["sdk"] or rec.sdk)
        elif rec.ev == "sdk":
            u["sdk"] = True
        elif rec.ev == "exit":
            u["sdk"] = bool(u["sdk"] or rec.sdk)
            u["exited"] = True
        elif rec.ev == "dispatch" and rec.id:
            dispatches.append(
                Dispatch(
                    id=rec.id,
                    runtime=rec.rt,
                    api=rec.api,
                    t=int(rec.t_posted) if rec.t_posted is not None else t,
                    pid=rec.pid,
                    tid=rec.tid,
                    span=_ref(rec.span),
                    carrier=rec.carrier,
                    site=_site(rec.site),
                    target_tid=rec.target_tid,
                    child_pid=rec.child_pid,
                    task=rec.task,
                )
            )
        elif rec.ev == "register":
            span = _ref(rec.span)
            if span is None:
                skipped += 1
                continue
            registrations.append(
                Registration(
                    runtime=rec.rt,
                    api=rec.api,
                    t=t,
                    pid=rec.pid,
                    tid=rec.tid,
                    span=span,
                    site=_site(rec.site),
                    event=rec.event,
                    bound=rec.bound,
                )
            )
        elif rec.ev == "target" and rec.id:
            # The far end became known after the dispatch was written (Python: a thread's ident, a child's pid).
            for i in range(len(dispatches) - 1, -1, -1):
                if dispatches[i].id == rec.id:
                    dispatches[i] = msgspec.structs.replace(
                        dispatches[i],
                        target_tid=rec.tid if rec.child_pid is None else dispatches[i].target_tid,
                        child_pid=rec.child_pid if rec.child_pid is not None else dispatches[i].child_pid,
                    )
                    break
        elif rec.ev == "start" and rec.trace and isinstance(rec.span, str):
            try:
                starts.append(
                    Start(
                        runtime=rec.rt,
                        t=t,
                        pid=rec.pid,
                        tid=rec.tid,
                        trace_id=int(rec.trace, 16),
                        span_id=int(rec.span, 16),
                        parent_span_id=int(rec.parent, 16) if rec.parent else 0,
                        dispatch=rec.dispatch,
                        name=rec.name,
                        main=bool(rec.main) if rec.main is not None else rec.tid == 0,
                    )
                )
            except ValueError:
                skipped += 1
    return Facts(
        dispatches=tuple(dispatches),
        starts=tuple(starts),
        units=tuple(Unit(**u) for u in units.values()),  # type: ignore[arg-type]
        skipped_lines=skipped,
        registrations=tuple(registrations),
    )


def read_facts(path: Path) -> Facts | None:
    """The facts in ``path``; ``None`` when the probe wrote nothing (it was off, or nothing ran)."""
    try:
        with path.open("rb") as fh:
            return decode(fh)
    except FileNotFoundError:
        return None
