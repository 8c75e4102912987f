"""The JSON report, schema ``ctxdoctor.report/v1``: a stable shape for scripts and CI.

Ids are lowercase hex. Fields may be added; existing ones keep their meaning.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _string
from typing import Any

from rich.console import Console

from ctxdoctor.findings import DispatchSite, Fix, Gap, Leak, MissingParent, Observation, Orphan, Report, SilentDispatch
from ctxdoctor.model import Span, span_hex, trace_hex

SCHEMA = "ctxdoctor.report/v1"


def _ref(s: Span | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"trace_id": trace_hex(s.trace_id), "span_id": span_hex(s.span_id), "name": s.name}


def _located(s: Span) -> dict[str, Any]:
    """What every finding starts with: the span (as ``_ref`` names it) and its service."""
    return {
        "trace_id": trace_hex(s.trace_id),
        "span_id": span_hex(s.span_id),
        "name": s.name,
        "service": s.unit.service,
    }


def _fix(f: Fix | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {"title": f.title, "steps": list(f.steps), "apis": list(f.apis), "snippet": f.snippet}


def _site(d: DispatchSite | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"file": d.file, "line": d.line, "column": d.column, "function": d.function}


def _observation(o: Observation | None) -> dict[str, Any] | None:
    if o is None:
        return None
    return {
        "processes": o.processes,
        "dispatches": o.dispatches,
        "sdk_units": o.sdk_units,
        "observed_orphans": o.observed_orphans,
        "inferred_orphans": o.inferred_orphans,
        "dropped_suspects": o.dropped,
        "observed_leaks": o.observed_leaks,
        "notes": list(o.notes),
    }


def _orphan(o: Orphan) -> dict[str, Any]:
    s = o.span
    return {
        **_located(s),
        "unit": s.unit.label(),
        "boundary": o.boundary.value,
        "boundary_evidence": o.boundary_evidence,
        "confidence": round(o.confidence, 4),
        "likely_parent": _ref(o.parent),
        "parent_confidence": round(o.parent_confidence, 4),
        "ambiguous": o.ambiguous,
        "candidates": o.candidates,
        "evidence": list(o.evidence),
        "start_time_unix_nano": str(s.start),
        "observed": o.observed,
        "dispatch_api": o.dispatch_api or None,
        "dispatch_site": _site(o.dispatch_site),
    }


def _missing(m: MissingParent) -> dict[str, Any]:
    s = m.span
    return {
        "trace_id": trace_hex(s.trace_id),
        "span_id": span_hex(s.span_id),
        "parent_span_id": span_hex(s.parent_span_id),
        "name": s.name,
        "service": s.unit.service,
        "parent_remote": m.parent_remote,
        "parent_remote_source": m.remote_source,
        "lost": m.lost,
        "siblings": m.siblings,
        "reason": m.reason,
        "fix": _fix(m.fix),
    }


def _gap(g: Gap) -> dict[str, Any]:
    return {
        "service": g.service,
        "parent_name": g.parent_name,
        "orphan_name": g.orphan_name,
        "boundary": g.boundary.value,
        "occurrences": g.occurrences,
        "share": round(g.share, 4),
        "confidence": round(g.confidence, 4),
        "runtime": g.runtime,
        "fix": _fix(g.fix),
        "examples": [_ref(o.span) for o in g.examples],
        "dispatch_site": _site(next((o.dispatch_site for o in g.examples if o.dispatch_site), None)),
    }


def _leak(lk: Leak) -> dict[str, Any]:
    s = lk.span
    return {
        **_located(s),
        "wrong_parent": {"span_id": span_hex(lk.wrong_parent.span_id), "name": lk.wrong_parent.name},
        "likely_parent": _ref(lk.likely_parent),
        "confidence": round(lk.confidence, 4),
        "evidence": list(lk.evidence),
        "fix": _fix(lk.fix),
        "observed": lk.observed,
        "registration_api": lk.registration_api or None,
        "registration_site": _site(lk.registration_site),
    }


def _silent(d: SilentDispatch) -> dict[str, Any]:
    s = d.span
    return {
        **_located(s),
        "boundary": d.boundary.value,
        "confidence": round(d.confidence, 4),
        "evidence": list(d.evidence),
        "fix": _fix(d.fix),
    }


def report_dict(report: Report) -> dict[str, Any]:
    s = report.summary
    return {
        "schema": SCHEMA,
        "summary": {
            "spans": s.spans,
            "traces": s.traces,
            "roots": s.roots,
            "suspected_orphans": s.suspected_orphans,
            "missing_parents": s.missing_parents,
            "lost_parents": s.lost_parents,
            "fragments": s.fragments,
            "broken_fragments": s.broken_fragments,
            "orphan_ratio": round(s.orphan_ratio, 6),
            "allowed_roots": s.allowed_roots,
            "leaked_spans": s.leaked_spans,
            "silent_dispatches": s.silent_dispatches,
        },
        "gate": {
            "max_orphan_ratio": report.settings.max_orphan_ratio,
            "failed": report.gate_failed,
        },
        "settings": {
            "min_confidence": report.settings.min_confidence,
            "max_orphan_ratio": report.settings.max_orphan_ratio,
            "allow": [{"service": a.service, "name": a.name, "reason": a.reason} for a in report.settings.allow],
            "attribute_values": report.settings.attribute_values,
            "sources": dict(report.settings.sources),
            "config_file": report.settings.config_file,
        },
        "orphans": [_orphan(o) for o in report.orphans],
        "missing_parents": [_missing(m) for m in report.missing_parents],
        "gaps": [_gap(g) for g in report.gaps],
        "leaks": [_leak(lk) for lk in report.leaks],
        "silent_dispatches": [_silent(d) for d in report.silent_dispatches],
        "warnings": list(report.warnings),
        "files": list(report.files),
        # Present under ``ctxdoctor run`` with its probe; null otherwise (nothing was observed).
        "observation": _observation(report.observation),
        "silent_workers": [
            {
                "runtime": w.runtime,
                "api": w.api,
                "dispatch_site": _site(w.site),
                "workers": w.workers,
                "dispatches": w.dispatches,
                "dispatches_with_span": w.with_span,
                "fix": _fix(w.fix),
            }
            for w in report.silent_workers
        ],
        "silent_processes": [
            {
                "pid": p.pid,
                "command": p.command,
                "lifetime_s": p.lifetime_s,
                "parent_pid": p.parent_pid,
                "fix": _fix(p.fix) if p.fix is not None else None,
            }
            for p in report.silent_processes
        ],
    }


#: Pieces of text held before they are written (see ``write_json``).
_BATCH = 8192


def write_json(obj: Any, write: Callable[[str], object]) -> None:
    """Write ``obj`` as ``json.dumps(obj, indent=2)`` would, as it is encoded, in batches.

    ``json.dumps`` would first hold every piece of the text in a list (~1M small strings for a
    report of 8,000 orphans) and then the whole text. Its indenting encoder is the pure-Python
    one, which hands every piece up through a generator per level of nesting; this one appends
    the pieces to one list, with the same text for every type ``json`` encodes (strings escaped
    to ASCII by ``json``'s own C function).
    """
    out: list[str] = []
    append = out.append

    def flush() -> None:
        write("".join(out))
        out.clear()

    def key(k: Any) -> str:
        if isinstance(k, str):
            return _string(k)
        if isinstance(k, float):
            return '"' + _float(k) + '"'
        if k is True or k is False or k is None:
            return '"' + _CONSTANTS[k] + '"'
        if isinstance(k, int):
            return '"' + int.__repr__(k) + '"'
        raise TypeError(f"keys must be str, int, float, bool or None, not {type(k).__name__}")

    def value(o: Any, level: int) -> None:
        if isinstance(o, str):
            append(_string(o))
        elif o is None or o is True or o is False:
            append(_CONSTANTS[o])
        elif isinstance(o, int):
            append(int.__repr__(o))
        elif isinstance(o, float):
            append(_float(o))
        elif isinstance(o, (list, tuple, dict)):
            if not o:
                append("{}" if isinstance(o, dict) else "[]")
            else:
                container(o, level + 1)
        else:
            raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    def container(o: list[Any] | tuple[Any, ...] | dict[Any, Any], level: int) -> None:
        # The common leaves (str, int, None) are written here without a call for each.
        inner = "\n" + "  " * level
        separator = "," + inner
        head = inner
        if isinstance(o, dict):
            append("{")
            for k, v in o.items():
                head += (_string(k) if type(k) is str else key(k)) + ": "
                t = type(v)
                if t is str:
                    append(head + _string(v))
                elif t is int:
                    append(head + int.__repr__(v))
                elif v is None:
                    append(head + "null")
                else:
                    append(head)
                    value(v, level)
                head = separator
            append("\n" + "  " * (level - 1) + "}")
        else:
            append("[")
            for v in o:
                t = type(v)
                if t is str:
                    append(head + _string(v))
                elif t is int:
                    append(head + int.__repr__(v))
                else:
                    append(head)
                    value(v, level)
                head = separator
                if len(out) >= _BATCH:
                    flush()
            append("\n" + "  " * (level - 1) + "]")

    value(obj, 0)
    append("\n")
    flush()


_CONSTANTS = {None: "null", True: "true", False: "false"}


def _float(o: float) -> str:
    """A float as ``json`` writes it (``allow_nan``: NaN and the infinities as JavaScript names)."""
    if o != o:
        return "NaN"
    if o == math.inf:
        return "Infinity"
    if o == -math.inf:
        return "-Infinity"
    return float.__repr__(o)


class JsonRenderer:
    name = "json"

    def render(self, report: Report, console: Console) -> None:
        write_json(report_dict(report), console.file.write)
