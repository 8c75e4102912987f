"""What ``ctxdoctor run``'s probe saw, applied to the statistical findings.

The statistics infer a root's likely parent from timing; the probe saw the dispatch: the span
active where the app handed work to another thread or process, the app's line that did it, and
the root span that work began on the far side. This module turns those facts into findings:

* a root whose dispatch carried an active span is an orphan whose parent is known (confidence
  1.0, evidence "seen at dispatch"), with the API and the source line of the dispatch;
* a statistical suspect whose dispatch the probe saw with no span active is no orphan (the work
  was started outside any trace) and is dropped, unless that dispatch was a Node.js message sent
  from a line that also sends inside spans (a pool draining its queue: the span the task was
  queued in is not where it was sent); suspects the probe did not see stay, marked inferred;
* work dispatched to a worker thread or process that never registered an SDK is a silent
  worker: whatever it traces is dropped;
* a process that lived a while and never started a span is a silent process;
* a leaked span (from the statistical leak pass) whose wrong parent the probe saw set up a
  callback that keeps its context (a listener bound with ``context.bind``, an interval set up
  inside it) is observed, with the line that set it up.

Pure: facts and spans in, a new ``Report`` out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import msgspec

from ctxdoctor.diagnose.gaps import group_gaps
from ctxdoctor.diagnose.orphans import is_suspect
from ctxdoctor.findings import (
    DispatchSite,
    Fix,
    Leak,
    Observation,
    Orphan,
    Report,
    SilentProcess,
    SilentWorker,
)
from ctxdoctor.fixes import silent_process_fix
from ctxdoctor.model import Span, span_hex, trace_hex
from ctxdoctor.probe.facts import Dispatch, Facts, Registration, Unit
from ctxdoctor.units import Boundary

SEEN = "seen at dispatch"
SEEN_REGISTERED = "seen at registration"
#: A process that ran at least this long without a span is reported as silent.
SILENT_AFTER_S = 1.0

_PROCESS_APIS = ("child_process.", "ChildProcess.", "multiprocessing.", "os.fork")

_SILENT_FIX = {
    "nodejs": Fix(
        title="Start an OpenTelemetry SDK in every worker, and shut it down with the worker",
        steps=(
            "A worker thread or child process is a separate isolate: the main thread's SDK does not reach it, "
            "so trace.getTracer() there returns a no-op tracer and every span it makes is dropped.",
            "Call your tracing set-up (new NodeSDK(...).start()) at the top of the worker's file, before its "
            "first span.",
            "Coordinate shutdown: before the worker exits (or before the pool is closed) await sdk.shutdown(), "
            "so its last spans are exported; avoid worker.terminate() on a worker with unexported spans.",
        ),
        apis=("new NodeSDK(...).start() in the worker", "await sdk.shutdown()", "pool.close() after shutdown"),
    ),
    "python": Fix(
        title="Start an OpenTelemetry SDK in every worker process, and shut it down with it",
        steps=(
            "A process started with spawn/forkserver has no tracer provider: the API there is a no-op and "
            "every span it makes is dropped (a forked child inherits one whose export thread is gone).",
            "Build the TracerProvider in the worker: a Pool(initializer=...) or at the top of the Process "
            "target; after os.fork use os.register_at_fork(after_in_child=...).",
            "Shut it down before the process exits (multiprocessing.util.Finalize or an explicit "
            "provider.shutdown()): pool workers leave through os._exit and skip atexit.",
        ),
        apis=("Pool(initializer=init_tracing)", "os.register_at_fork(after_in_child=...)", "provider.shutdown()"),
    ),
}


def _runtime(name: str) -> str:
    return "nodejs" if name == "node" else name


def _boundary(d: Dispatch) -> Boundary:
    return Boundary.PROCESS if d.api.startswith(_PROCESS_APIS) or d.child_pid is not None else Boundary.THREAD


def _tie_python(facts: Facts) -> dict[tuple[int, int], Dispatch]:
    """Root span -> its dispatch: the probe noted the dispatch on the thread where the span began."""
    by_id = {d.id: d for d in facts.dispatches}
    by_child = {d.child_pid: d for d in facts.dispatches if d.child_pid is not None and d.runtime == "python"}
    tied: dict[tuple[int, int], Dispatch] = {}
    for s in facts.starts:
        if s.runtime != "python":
            continue
        d = by_id.get(s.dispatch) if s.dispatch else None
        if d is None:
            d = by_child.get(s.pid)
            # A child's own threads run what the child started; only its main thread runs the dispatch.
            if d is not None and s.dispatch is None and not s.main:
                d = None
        if d is not None:
            tied[(s.trace_id, s.span_id)] = d
    return tied


def _starts_unit(d: Dispatch) -> bool:
    return d.api == "worker_threads.Worker" or d.api.startswith("child_process.")


def _tie_node(facts: Facts) -> dict[tuple[int, int], Dispatch]:
    """Root span -> its dispatch, per worker thread or child process, first come first served.

    A worker or child handles the work sent to it in order, so each root it starts belongs to the
    oldest task sent to it before that root started and not yet claimed.
    """
    queues: dict[tuple[int, int], list[Dispatch]] = defaultdict(list)
    for d in sorted(facts.dispatches, key=lambda d: d.t):
        if d.runtime != "node" or not d.task:
            continue
        if d.child_pid is not None:
            queues[(d.child_pid, 0)].append(d)
        elif d.target_tid is not None:
            queues[(d.pid, d.target_tid)].append(d)
    for key, queue in queues.items():
        # A worker or child the app also sends messages to does its work per message: starting it
        # (new Worker, fork) was set-up, and its first root belongs to the first message.
        if any(not _starts_unit(d) for d in queue):
            queues[key] = [d for d in queue if not _starts_unit(d)]
    tied: dict[tuple[int, int], Dispatch] = {}
    claimed: set[str] = set()
    for s in sorted(facts.starts, key=lambda s: s.t):
        if s.runtime != "node" or s.parent_span_id:
            continue
        for d in queues.get((s.pid, s.tid or 0), ()):
            if d.t > s.t:
                break
            if d.id not in claimed:
                claimed.add(d.id)
                tied[(s.trace_id, s.span_id)] = d
                break
    return tied


def _orphan(span: Span, parent: Span | None, d: Dispatch) -> Orphan:
    assert d.span is not None
    where = f" at {d.site.label()}" if d.site else ""
    evidence = [SEEN, f"{d.api}{where} ran while span {span_hex(d.span[1])} (trace {trace_hex(d.span[0])}) was active"]
    evidence.append(
        "a trace context went along but the far side did not use it"
        if d.carrier
        else "no trace context went along (no traceparent, no copied context)"
    )
    return Orphan(
        span=span,
        parent=parent,
        boundary=_boundary(d),
        boundary_evidence=f"{SEEN}: {d.api}",
        confidence=1.0,
        parent_confidence=1.0,
        candidates=1,
        evidence=tuple(evidence),
        observed=True,
        dispatch_site=d.site,
        dispatch_api=d.api,
    )


def _silent_workers(facts: Facts) -> list[SilentWorker]:
    units = {(u.pid, u.tid if u.runtime == "node" else None): u for u in facts.units}
    groups: dict[tuple[str, str, DispatchSite | None], list[tuple[Dispatch, Unit]]] = defaultdict(list)
    for d in facts.dispatches:
        if not d.task:
            continue
        if d.child_pid is not None:
            target = units.get((d.child_pid, 0 if d.runtime == "node" else None)) or units.get((d.child_pid, None))
        elif d.runtime == "node" and d.target_tid is not None:
            target = units.get((d.pid, d.target_tid))
        else:
            continue  # a Python thread shares its process's SDK
        if target is None or target.sdk or not target.exited:
            continue  # not seen, or it has an SDK, or it may yet register one
        source = units.get((d.pid, d.tid if d.runtime == "node" else None))
        if source is None or not source.sdk:
            continue  # an app that traces nowhere has no silent workers, only "no SDK anywhere"
        groups[(d.runtime, d.api, d.site)].append((d, target))
    out = []
    for (runtime, api, site), members in groups.items():
        rt = _runtime(runtime)
        out.append(
            SilentWorker(
                runtime=rt,
                api=api,
                site=site,
                workers=len({(u.pid, u.tid) for _, u in members}),
                dispatches=len(members),
                with_span=sum(1 for d, _ in members if d.span is not None),
                fix=_SILENT_FIX.get(rt, _SILENT_FIX["nodejs"]),
            )
        )
    out.sort(key=lambda w: (-w.with_span, -w.dispatches, w.api))
    return out


#: Helpers the runtime itself starts (they never trace, by design).
_RUNTIME_HELPERS = (
    "multiprocessing.resource_tracker",
    "multiprocessing.forkserver",
    "multiprocessing.semaphore_tracker",
)


def _silent_processes(facts: Facts, spans: Sequence[Span]) -> list[SilentProcess]:
    """Processes that lived at least ``SILENT_AFTER_S`` and never started a span.

    From the sampled process tree when there is one (real lifetimes, any program; a process with
    children of its own is a wrapper, a shell or npm, and is left out), else from the probe's
    own view of the Node.js and Python processes. A process "started a span" when a span in the
    dump carries its ``process.pid`` or the probe saw a span begin there.
    """
    # "Exported" is what counts: a forked worker that inherited its master's SDK starts spans (the
    # probe sees them) and may never export one. Its spans also carry the master's resource.
    exported = {(s.trace_id, s.span_id) for s in spans}
    active = {s.unit.pid for s in spans if s.unit.pid is not None} | {
        s.pid for s in facts.starts if (s.trace_id, s.span_id) in exported
    }
    out = []
    if facts.processes:
        for p in facts.processes:
            lifetime = p.last_seen - p.started
            if p.has_children or p.pid in active or lifetime < SILENT_AFTER_S:
                continue
            if any(h in p.command for h in _RUNTIME_HELPERS):
                continue
            out.append(
                SilentProcess(
                    pid=p.pid,
                    command=p.command,
                    lifetime_s=round(lifetime, 3),
                    parent_pid=p.parent_pid,
                    fix=silent_process_fix(p.command),
                )
            )
    else:
        for u in facts.units:
            lifetime = (u.last_t - u.first_t) / 1e9
            if not u.main or u.pid in active or lifetime < SILENT_AFTER_S:
                continue
            out.append(
                SilentProcess(
                    pid=u.pid,
                    command=u.command,
                    lifetime_s=round(lifetime, 3),
                    parent_pid=u.ppid,
                    fix=silent_process_fix(u.command),
                )
            )
    out.sort(key=lambda p: p.pid)
    return out


def _observed_leaks(leaks: Sequence[Leak], facts: Facts) -> list[Leak]:
    """The leaks whose wrong parent set up the callback that ran them, marked observed with its line.

    The statistics found the span under a parent it does not belong to; the probe saw that parent
    register a callback that keeps its context. The first such registration in the span is named
    (a span that sets up several is rare, and they share the fix).
    """
    first: dict[tuple[int, int], Registration] = {}
    for reg in sorted(facts.registrations, key=lambda x: x.t):
        first.setdefault(reg.span, reg)
    out = []
    for lk in leaks:
        r = first.get((lk.wrong_parent.trace_id, lk.wrong_parent.span_id))
        if r is None:
            out.append(lk)
            continue
        what = f"{r.api}('{r.event}')" if r.event else r.api
        where = f" at {r.site.label()}" if r.site else ""
        how = (
            "a listener bound to its context with context.bind"
            if r.bound
            else "a callback that runs in the context it was set up in"
        )
        seen = f"{SEEN_REGISTERED}: {what}{where} ran inside '{lk.wrong_parent.name}' and left {how}"
        out.append(
            msgspec.structs.replace(
                lk,
                evidence=(seen, *lk.evidence),
                observed=True,
                registration_api=r.api,
                registration_site=r.site,
            )
        )
    return out


def _queue_drains(facts: Facts) -> set[tuple[str, str, DispatchSite | None]]:
    """Node.js message sends (to a worker or child already running) from a line that sent both
    inside and outside a span: an app's own pool draining its queue whenever a worker is free.
    There the span-less sends run in whatever callback freed the worker, so they say nothing about
    the span the task was queued in, and contradict no statistical suspect. Python wraps each task
    where it is submitted, so its span-less dispatches stay exact."""
    with_span: set[tuple[str, str, DispatchSite | None]] = set()
    without: set[tuple[str, str, DispatchSite | None]] = set()
    for d in facts.dispatches:
        if d.runtime != "node" or _starts_unit(d):
            continue
        (with_span if d.span is not None else without).add((d.runtime, d.api, d.site))
    return with_span & without


def apply_observations(report: Report, spans: Sequence[Span], facts: Facts) -> Report:
    """The report with the probe's facts applied (see the module's docstring)."""
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    tied = {**_tie_python(facts), **_tie_node(facts)}
    settings = report.settings
    observed: dict[tuple[int, int], Orphan] = {}
    contradicted: set[tuple[int, int]] = set()
    drained = _queue_drains(facts)
    for key, d in tied.items():
        span = by_id.get(key)
        if span is None or span.parent_span_id:
            continue
        if d.span is None:
            if (d.runtime, d.api, d.site) not in drained:
                contradicted.add(key)
            continue
        if any(a.matches(span.unit.service, span.name) for a in settings.allow):
            continue
        observed[key] = _orphan(span, by_id.get(d.span), d)
    # Roots the probe saw start outside any dispatch, on a thread that runs no dispatched work:
    # the statistics may suspect them, the probe knows nothing was handed over.
    children = {d.child_pid for d in facts.dispatches if d.child_pid is not None}
    for s in facts.starts:
        key = (s.trace_id, s.span_id)
        if s.parent_span_id or key in tied or s.dispatch is not None:
            continue
        if s.main and s.pid not in children:
            contradicted.add(key)
    kept: list[Orphan] = []
    dropped = 0
    for o in report.orphans:
        key = (o.span.trace_id, o.span.span_id)
        if key in observed:
            continue
        if key in contradicted:
            dropped += 1
            continue
        kept.append(o)
    inferred = len(kept)
    orphans = sorted(observed.values(), key=lambda o: o.span.start) + kept
    group_sizes: dict[tuple[str, str], int] = defaultdict(int)
    for span in spans:
        if span.parent_span_id == 0 and is_suspect(span):
            group_sizes[(span.unit.service, span.name)] += 1
    gaps = group_gaps(orphans, group_sizes)
    summary = report.summary
    broken = summary.broken_fragments - summary.suspected_orphans + len(orphans)
    summary = msgspec.structs.replace(
        summary,
        suspected_orphans=len(orphans),
        broken_fragments=broken,
        orphan_ratio=broken / summary.fragments if summary.fragments else 0.0,
    )
    notes = []
    if not any(u.sdk for u in facts.units):
        notes.append("no SDK anywhere: no process or worker the command ran registered an OpenTelemetry SDK")
    if facts.skipped_lines:
        notes.append(f"{facts.skipped_lines} unreadable line(s) in the probe's facts were skipped")
    leaks = _observed_leaks(report.leaks, facts)
    observation = Observation(
        processes=len(facts.units),
        dispatches=sum(1 for d in facts.dispatches if d.task),
        sdk_units=sum(1 for u in facts.units if u.sdk),
        observed_orphans=len(observed),
        inferred_orphans=inferred,
        dropped=dropped,
        notes=tuple(notes),
        observed_leaks=sum(1 for lk in leaks if lk.observed),
    )
    return msgspec.structs.replace(
        report,
        summary=summary,
        orphans=tuple(orphans),
        gaps=tuple(gaps),
        leaks=tuple(leaks),
        silent_workers=tuple(_silent_workers(facts)),
        silent_processes=tuple(_silent_processes(facts, spans)),
        observation=observation,
    )
