"""The terminal report: summary, the gaps worst first, then for the top gaps a small tree of
where the orphan belongs and the fix. Fits 80 columns; rich drops colour when not a TTY."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console, Group
from rich.padding import Padding
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ctxdoctor.findings import NO_SPANS, Fix, Gap, Leak, MissingParent, Report
from ctxdoctor.model import span_hex, trace_hex
from ctxdoctor.render.junit import belongs, leak_groups, registered, silent_groups

#: Gaps shown in detail (tree + fix); the table lists them all.
DETAILED = 3


def _pct(x: float) -> str:
    return f"{x:.0%}" if x >= 0.01 or x == 0 else f"{x:.2%}"


def _short(h: str) -> str:
    return h[:8] + "…"


def summary_text(report: Report) -> Text:
    s = report.summary
    t = Text()
    t.append("ctxdoctor", style="bold")
    t.append(f"  {s.spans:,} spans in {s.traces:,} traces ({s.roots:,} roots)\n")
    t.append("suspected orphans ", style="dim")
    t.append(f"{s.suspected_orphans:,}", style="bold red" if s.suspected_orphans else "bold green")
    t.append("   lost parents ", style="dim")
    t.append(f"{s.lost_parents:,}", style="bold red" if s.lost_parents else "bold green")
    t.append("   orphan ratio ", style="dim")
    t.append(_pct(s.orphan_ratio), style="bold")
    t.append(f" ({s.broken_fragments:,}/{s.fragments:,} fragments)")
    if s.leaked_spans or s.silent_dispatches:
        t.append("\nleaked spans ", style="dim")
        t.append(f"{s.leaked_spans:,}", style="bold red" if s.leaked_spans else "bold green")
        t.append("   silent dispatches ", style="dim")
        t.append(f"{s.silent_dispatches:,}", style="bold yellow" if s.silent_dispatches else "bold green")
    limit = report.settings.max_orphan_ratio
    if limit is not None:
        t.append("\ngate ", style="dim")
        if report.gate_failed and s.spans == 0:
            t.append("FAILED: " + NO_SPANS, style="bold red")
        elif report.gate_failed:
            t.append(f"FAILED: orphan ratio {_pct(s.orphan_ratio)} > {_pct(limit)}", style="bold red")
        else:
            t.append(f"passed: orphan ratio {_pct(s.orphan_ratio)} <= {_pct(limit)}", style="bold green")
    if s.allowed_roots:
        t.append(f"\n{s.allowed_roots:,} root(s) accepted by allow rules", style="dim")
    line = settings_line(report)
    if line:
        t.append("\n" + line, style="dim")
    if report.settings.attribute_values is False and report.settings.source("attribute-values") is None:
        t.append(
            "\nattribute values not read (an input this big is read in parallel without them): ids shared "
            "by a dispatcher and its work were not used; --attribute-values reads them",
            style="dim",
        )
    return t


def settings_line(report: Report) -> str:
    """Which bar was applied and where each part came from (config file, command line, default)."""
    st = report.settings
    if not st.sources:
        return ""
    values = {
        "max-orphan-ratio": "none" if st.max_orphan_ratio is None else f"{st.max_orphan_ratio:g}",
        "min-confidence": f"{st.min_confidence:g}",
        "allow": f"{len(st.allow)} rule{'s' if len(st.allow) != 1 else ''}" if st.allow else "none",
        "attribute-values": {True: "on", False: "off", None: "by size"}[st.attribute_values],
    }
    return "settings: " + ", ".join(f"{k} {v} ({st.source(k) or 'default'})" for k, v in values.items())


def gaps_table(gaps: tuple[Gap, ...]) -> Table:
    table = Table(title="Propagation gaps (worst first)", title_justify="left", expand=False, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("service", overflow="fold")
    table.add_column("dispatching span -> orphan", overflow="fold", ratio=3)
    table.add_column("boundary", no_wrap=True)
    table.add_column("seen", justify="right", no_wrap=True)
    table.add_column("conf", justify="right", no_wrap=True)
    for i, g in enumerate(gaps, 1):
        table.add_row(
            str(i),
            g.service,
            f"{g.parent_name} -> {g.orphan_name}",
            f"{g.boundary.value}\n{g.runtime}",
            f"{g.occurrences}\n{_pct(g.share)}",
            f"{g.confidence:.2f}",
        )
    return table


def fix_block(fix: Fix, lexer: str) -> Group:
    parts: list = [Text(f"Fix: {fix.title}", style="bold green")]
    for n, step in enumerate(fix.steps, 1):
        parts.append(Padding(Text(f"{n}. {step}"), (0, 0, 0, 2)))
    if fix.snippet:
        parts.append(Padding(Syntax(fix.snippet, lexer, theme="ansi_dark", word_wrap=True), (0, 0, 0, 2)))
    return Group(*parts)


def gap_detail(i: int, gap: Gap) -> Panel:
    ex = gap.examples[0]
    parent = ex.parent
    assert parent is not None
    tree = Tree(Text(f"trace {_short(trace_hex(parent.trace_id))}", style="dim"))
    node = tree.add(
        Text.assemble((parent.name, "bold"), f"  span {span_hex(parent.span_id)}  ", (parent.unit.label(), "dim"))
    )
    if ex.dispatch_site is not None:
        node = node.add(
            Text.assemble(
                ("dispatched at ", "dim"), (ex.dispatch_site.label(), "bold cyan"), (f"  {ex.dispatch_api}", "dim")
            )
        )
    node.add(
        Text.assemble(
            ("+ ", "green"),
            (ex.span.name, "bold green"),
            "  belongs here; it is now the root of trace ",
            (_short(trace_hex(ex.span.trace_id)), "dim"),
            "  ",
            (ex.span.unit.label(), "dim"),
        )
    )
    ambiguity = (
        Text(
            f"Parent ambiguous: {ex.candidates} spans of other traces were active; "
            f"named parent confidence {ex.parent_confidence:.2f}.",
            style="yellow",
        )
        if ex.ambiguous
        else Text("")
    )
    evidence = Text("Why: " + "; ".join(ex.evidence), style="dim")
    boundary = Text(f"Boundary: {gap.boundary.value} ({ex.boundary_evidence})")
    lexer = "javascript" if gap.runtime == "nodejs" else "python"
    how = "observed" if all(o.observed for o in gap.examples) else f"confidence {gap.confidence:.2f}"
    title = f"[{i}] {gap.service}: {gap.parent_name} -> {gap.orphan_name}  ({gap.occurrences}x, {how})"
    return Panel(
        Group(tree, boundary, evidence, ambiguity, fix_block(gap.fix, lexer)),
        title=title,
        title_align="left",
    )


def silent_workers(report: Report) -> Group | None:
    """Work sent where no SDK was registered: a fact from the probe, with the fix."""
    if not report.silent_workers:
        return None
    parts: list[Any] = []
    for w in report.silent_workers:
        where = w.site.label() if w.site else "(no frame of the app's own code on the stack)"
        parts.append(
            Text.assemble(
                ("Silent worker: ", "bold red"),
                f"{w.api} at ",
                (where, "bold cyan"),
                f" sent work to {w.workers} {'worker' if w.workers == 1 else 'workers'} that never registered an "
                f"OpenTelemetry SDK ({w.dispatches} dispatches, {w.with_span} inside a span): their spans are dropped.",
            )
        )
    first = report.silent_workers[0]
    parts.append(fix_block(first.fix, "javascript" if first.runtime == "nodejs" else "python"))
    return Group(*parts)


def observation_text(report: Report) -> Text | None:
    o = report.observation
    if o is None:
        return None
    t = Text(
        f"Probe: {o.dispatches} dispatches in {o.processes} processes/threads ({o.sdk_units} with an SDK); "
        f"{o.observed_orphans} orphan(s) observed, {o.inferred_orphans} inferred",
        style="dim",
    )
    if o.dropped:
        t.append(f", {o.dropped} statistical suspect(s) dropped (their dispatch carried no span)", style="dim")
    if o.observed_leaks:
        t.append(f"; {o.observed_leaks} leaked span(s) observed at their callback's registration", style="dim")
    for note in o.notes:
        t.append(f"\n{note}", style="yellow")
    for p in report.silent_processes:
        t.append(
            f"\nSilent process: pid {p.pid} ({p.command or 'unknown command'}) ran {p.lifetime_s:.1f}s and "
            "exported no span",
            style="yellow",
        )
    return t


def missing_table(missing: tuple[MissingParent, ...]) -> Table | None:
    lost = [m for m in missing if m.lost]
    if not lost:
        return None
    groups: Counter[tuple[str, str, str]] = Counter()
    for m in lost:
        where = "remote" if m.parent_remote else "local"
        groups[(m.span.unit.service, m.span.name, where)] += 1
    table = Table(title="Spans whose parent never arrived (lost)", title_justify="left", pad_edge=False)
    table.add_column("service", overflow="fold")
    table.add_column("span", overflow="fold")
    table.add_column("parent", no_wrap=True)
    table.add_column("spans", justify="right", no_wrap=True)
    for (svc, name, where), n in groups.most_common():
        table.add_row(svc, name, where, str(n))
    return table


def _lexer(language: str | None) -> str:
    return "javascript" if language == "nodejs" else "python"


def leaks_block(report: Report) -> Group | None:
    """Context leaks: one table row per (wrong parent, span name), then the worst one's why and fix."""
    groups = leak_groups(report.leaks)
    if not groups:
        return None
    table = Table(title="Context leaks (spans under the wrong parent)", title_justify="left", pad_edge=False)
    table.add_column("service", overflow="fold")
    table.add_column("wrong parent -> span", overflow="fold", ratio=3)
    table.add_column("where they belong", overflow="fold")
    table.add_column("spans", justify="right", no_wrap=True)
    table.add_column("conf", justify="right", no_wrap=True)
    for (service, parent, name), leaked in groups:
        table.add_row(
            service,
            f"{parent} -> {name}",
            belongs(leaked),
            str(len(leaked)),
            f"{leaked[0].confidence:.2f}",
        )
    first = groups[0][1][0]
    return Group(
        table,
        Text(
            f"e.g. span {span_hex(first.span.span_id)} in trace {_short(trace_hex(first.span.trace_id))}", style="dim"
        ),
        *_registered_text(groups[0][1]),
        Text("Why: " + "; ".join(first.evidence), style="dim"),
        fix_block(first.fix, _lexer(first.span.unit.language)),
    )


def _registered_text(leaked: list[Leak]) -> list[Text]:
    seen = registered(leaked)
    if seen is None or seen.registration_site is None:
        return []
    return [
        Text.assemble(
            ("registered at ", "dim"),
            (seen.registration_site.label(), "bold cyan"),
            (f"  {seen.registration_api} (observed by the probe)", "dim"),
        )
    ]


def silent_block(report: Report) -> Group | None:
    """Silent dispatches: one row per (span name, boundary), then the worst one's why and fix."""
    groups = silent_groups(report.silent_dispatches)
    if not groups:
        return None
    table = Table(title="Silent dispatches (a worker exported nothing)", title_justify="left", pad_edge=False)
    table.add_column("service", overflow="fold")
    table.add_column("dispatching span", overflow="fold", ratio=3)
    table.add_column("boundary", no_wrap=True)
    table.add_column("spans", justify="right", no_wrap=True)
    table.add_column("conf", justify="right", no_wrap=True)
    for (service, name, bnd), members in groups:
        table.add_row(service, name, bnd, str(len(members)), f"{members[0].confidence:.2f}")
    first = groups[0][1][0]
    return Group(
        table,
        Text(
            f"e.g. span {span_hex(first.span.span_id)} in trace {_short(trace_hex(first.span.trace_id))}", style="dim"
        ),
        Text("Why: " + "; ".join(first.evidence), style="dim"),
        fix_block(first.fix, _lexer(first.span.unit.language)),
    )


class TerminalRenderer:
    name = "terminal"

    def __init__(self, detailed: int = DETAILED):
        self.detailed = detailed

    def render(self, report: Report, console: Console) -> None:
        for w in report.warnings:
            console.print(Text(f"warning: {w}", style="yellow"))
        console.print(summary_text(report))
        if report.gaps:
            console.print()
            console.print(gaps_table(report.gaps))
            for i, g in enumerate(report.gaps[: self.detailed], 1):
                console.print(gap_detail(i, g))
        elif report.summary.suspected_orphans == 0:
            console.print(Text("No propagation gaps: every root looks like a legitimate entry point.", style="green"))
        silent = silent_workers(report)
        if silent is not None:
            console.print()
            console.print(silent)
        observed = observation_text(report)
        if observed is not None:
            console.print(observed)
        fixed = next((p.fix for p in report.silent_processes if p.fix is not None), None)
        if fixed is not None:
            console.print(fix_block(fixed, "javascript" if any("NodeSDK" in a for a in fixed.apis) else "python"))
        table = missing_table(report.missing_parents)
        if table is not None:
            console.print()
            console.print(table)
            first = next(m for m in report.missing_parents if m.lost)
            console.print(Text(f"Why: {first.reason}.", style="dim"))
            if first.fix is not None:
                console.print(fix_block(first.fix, "javascript" if first.span.unit.language == "nodejs" else "python"))
        for block in (leaks_block(report), silent_block(report)):
            if block is not None:
                console.print()
                console.print(block)
        info = sum(1 for m in report.missing_parents if not m.lost)
        if info:
            console.print(
                Text(
                    f"{info} span(s) have a remote parent from an upstream that does not export here "
                    "(informational, not counted).",
                    style="dim",
                )
            )
