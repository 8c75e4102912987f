"""Findings: plain records that the diagnosis produces and every renderer consumes."""

from __future__ import annotations

from fnmatch import fnmatchcase

import msgspec

from ctxdoctor.model import Span
from ctxdoctor.units import Boundary

#: Why a gate fails on an empty dump.
NO_SPANS = "no spans to judge: the dump is empty, or the app's exporter never reached ctxdoctor"


class Fix(msgspec.Struct, frozen=True):
    """What to change, for one runtime and boundary, naming the exact APIs."""

    title: str
    steps: tuple[str, ...]
    apis: tuple[str, ...]
    snippet: str = ""


class DispatchSite(msgspec.Struct, frozen=True):
    """Where the app handed work to another thread or process, as ``ctxdoctor run``'s probe saw it."""

    file: str
    line: int
    column: int | None = None
    function: str = ""

    def label(self) -> str:
        col = f":{self.column}" if self.column else ""
        return f"{self.file}:{self.line}{col}" + (f" ({self.function})" if self.function else "")


#: A likely parent whose confidence is below this is reported as ambiguous (with the number of
#: candidates) rather than as the parent. Chosen by bench/accuracy.py so that parents reported
#: as not ambiguous are right on held-out families (bench/README.md has the figures).
AMBIGUOUS_BELOW = 0.9


class Orphan(msgspec.Struct, frozen=True):
    """A root span that most likely lost the context of the span that dispatched it."""

    span: Span
    parent: Span | None  # the likely dispatching span (another trace)
    boundary: Boundary
    boundary_evidence: str
    confidence: float  # that this root is lost context rather than a legitimate root
    parent_confidence: float  # that ``parent`` is the right one among the active candidates
    candidates: int  # spans of other traces that were active (related units) when it started
    evidence: tuple[str, ...] = ()
    #: Seen by the probe under ``ctxdoctor run`` (the parent is a fact), rather than inferred.
    observed: bool = False
    dispatch_site: DispatchSite | None = None
    dispatch_api: str = ""

    @property
    def ambiguous(self) -> bool:
        return self.parent_confidence < AMBIGUOUS_BELOW


class MissingParent(msgspec.Struct, frozen=True):
    """A span whose parent span is not in the dump."""

    span: Span
    parent_remote: bool  # as recorded by the SDK (flags) or inferred
    remote_source: str  # "flags" or "inferred"
    lost: bool  # True: the parent should have arrived (counts against the gate)
    reason: str
    siblings: int  # spans in the dump that share this missing parent
    fix: Fix | None = None


class LostGroup(msgspec.Struct, frozen=True):
    """Spans of one name in one service whose parent (remote or local) never arrived: the unit a
    CI report lists and fixes, since they share a cause."""

    service: str
    span_name: str
    parent_remote: bool
    members: tuple[MissingParent, ...]


class Gap(msgspec.Struct, frozen=True):
    """A propagation gap: one recurring (dispatching span -> orphan) pattern."""

    service: str
    parent_name: str
    orphan_name: str
    boundary: Boundary
    occurrences: int
    roots_with_name: int  # all roots of that name in that service, flagged or not
    confidence: float
    runtime: str
    fix: Fix
    examples: tuple[Orphan, ...]

    @property
    def share(self) -> float:
        return self.occurrences / self.roots_with_name if self.roots_with_name else 0.0


class SilentWorker(msgspec.Struct, frozen=True):
    """Work handed to workers or processes that never registered an OpenTelemetry SDK: every span
    made there is dropped (the API alone records nothing)."""

    runtime: str
    api: str
    site: DispatchSite | None
    workers: int  # distinct threads or processes it went to
    dispatches: int
    with_span: int  # dispatches made while a span was active (traces that end at this line)
    fix: Fix


class SilentProcess(msgspec.Struct, frozen=True):
    """A process the command started that lived a while and never exported a span."""

    pid: int
    command: str
    lifetime_s: float
    parent_pid: int | None
    fix: Fix | None = None  # for the kind of process its command line names (gunicorn, Celery, node...)


class Observation(msgspec.Struct, frozen=True):
    """What ``ctxdoctor run``'s probe saw, and how it changed the statistical findings."""

    processes: int  # processes (and Node.js worker threads) the probe ran in
    dispatches: int
    sdk_units: int  # of those, the ones where an OpenTelemetry SDK was registered
    observed_orphans: int
    inferred_orphans: int  # kept from the statistics: the probe did not see their dispatch
    dropped: int  # statistical suspects the probe contradicts (their dispatch carried no span)
    notes: tuple[str, ...] = ()
    observed_leaks: int = 0  # leaked spans whose wrong parent the probe saw set up their callback
class Leak(msgspec.Struct, frozen=True):
    """A span recorded under the wrong parent: a context captured at set-up time (a listener, a
    timer, a pool callback) and reused for later, unrelated work."""

    span: Span
    wrong_parent: Span
    likely_parent: Span | None  # where it belongs (another trace); None: it should have been a root
    confidence: float
    evidence: tuple[str, ...]
    fix: Fix
    #: ``ctxdoctor run``'s probe saw the wrong parent set up the callback that ran this span's work
    #: (a listener bound to its context, an interval set up inside it), at this line.
    observed: bool = False
    registration_api: str = ""
    registration_site: DispatchSite | None = None


class SilentDispatch(msgspec.Struct, frozen=True):
    """A span that handed work across a boundary to a worker that exported nothing back."""

    span: Span
    boundary: Boundary
    hole_start: int  # Unix ns: the uncovered stretch where the worker's spans belong
    hole_end: int
    confidence: float
    evidence: tuple[str, ...]
    fix: Fix


class Summary(msgspec.Struct, frozen=True):
    spans: int
    traces: int
    roots: int
    suspected_orphans: int
    missing_parents: int
    lost_parents: int  # distinct parents that should have arrived and did not
    fragments: int  # roots + distinct missing parents: the pieces the traces fell into
    broken_fragments: int  # suspected orphans + lost parents
    orphan_ratio: float  # broken_fragments / fragments
    allowed_roots: int = 0  # roots that would be suspected orphans but match an allow rule
    leaked_spans: int = 0  # spans under the wrong parent; each is a broken fragment
    silent_dispatches: int = 0  # spans whose worker exported nothing back (not in the ratio)


class Allow(msgspec.Struct, frozen=True):
    """A root that is legitimately a root (by service and span name; shell-style wildcards).

    Lets a team accept one known case (a scheduled job that happens to overlap requests) without
    lowering the threshold for everything else.
    """

    service: str | None = None
    name: str | None = None
    reason: str = ""

    def matches(self, service: str, name: str) -> bool:
        return (self.service is None or fnmatchcase(service, self.service)) and (
            self.name is None or fnmatchcase(name, self.name)
        )

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("service", self.service), ("name", self.name)) if v is not None]
        return " ".join(parts)


class Settings(msgspec.Struct, frozen=True):
    """What the diagnosis was run with; reported so a CI log says which bar was applied."""

    min_confidence: float = 0.85
    max_orphan_ratio: float | None = None
    allow: tuple[Allow, ...] = ()
    #: Read the spans' attribute values, the evidence of ids shared by a dispatcher and its
    #: work; ``None``: for inputs read in one process (``readers.read_paths``).
    attribute_values: bool | None = None
    #: (setting, where its value came from: "command line", "default" or the config file)
    sources: tuple[tuple[str, str], ...] = ()
    config_file: str | None = None

    def source(self, key: str) -> str | None:
        return next((where for k, where in self.sources if k == key), None)


class Report(msgspec.Struct, frozen=True):
    summary: Summary
    orphans: tuple[Orphan, ...]
    missing_parents: tuple[MissingParent, ...]
    gaps: tuple[Gap, ...]
    settings: Settings
    warnings: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    silent_workers: tuple[SilentWorker, ...] = ()
    silent_processes: tuple[SilentProcess, ...] = ()
    observation: Observation | None = None
    #: The lost parents (``missing_parents`` with ``lost``), grouped, largest group first.
    lost_groups: tuple[LostGroup, ...] = ()
    leaks: tuple[Leak, ...] = ()
    silent_dispatches: tuple[SilentDispatch, ...] = ()

    @property
    def gate_failed(self) -> bool:
        """Over the threshold, or nothing to judge: a gate that passed on zero spans would hide
        an exporter that never reached ctxdoctor (a wrong endpoint, tracing switched off)."""
        limit = self.settings.max_orphan_ratio
        return limit is not None and (self.summary.spans == 0 or self.summary.orphan_ratio > limit)
