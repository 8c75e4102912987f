"""Wording shared by the CI renderers (JUnit, GitHub), so both say the same thing the same way."""

from __future__ import annotations

from ctxdoctor.findings import NO_SPANS, Report


def pct(x: float) -> str:
    return f"{x:.1%}"


def gate_message(report: Report) -> str:
    s = report.summary
    limit = report.settings.max_orphan_ratio
    ratio = f"orphan ratio {pct(s.orphan_ratio)} ({s.broken_fragments}/{s.fragments} fragments)"
    if limit is None:
        return f"{ratio}; no gate (set max-orphan-ratio to fail on it)"
    if s.spans == 0:
        return NO_SPANS
    op = ">" if report.gate_failed else "<="
    return f"{ratio} {op} max-orphan-ratio {pct(limit)}"
