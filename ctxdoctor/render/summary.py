"""The short summary ``check`` prints: the figures, the gate, and one line per gap.

A CI log needs the verdict and where to look, not the full report (``analyze`` prints that).
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from ctxdoctor.findings import Report
from ctxdoctor.render.terminal import summary_text


class SummaryRenderer:
    name = "summary"

    def render(self, report: Report, console: Console) -> None:
        for w in report.warnings:
            console.print(Text(f"warning: {w}", style="yellow"))
        console.print(summary_text(report))
        for g in report.gaps:
            console.print(
                Text(f"  gap: {g.service}: {g.parent_name} -> {g.orphan_name} ({g.boundary.value}, {g.occurrences}x)")
            )
