"""GitHub Actions: ``::error``/``::warning`` annotations and a Markdown job summary.

Annotations put the verdict on the run page and the pull request without anyone opening the log;
the summary (appended to ``$GITHUB_STEP_SUMMARY``) carries the gaps table and the fixes. Both
are produced when the variables GitHub sets are present (``publish`` in ``ctxdoctor.runner``
decides), or on demand with ``--format github``.

Escaping follows the runner's parser (actions/toolkit ``command.ts``): ``%``, CR and LF in the
message; additionally ``:`` and ``,`` in property values. GitHub keeps at most 10 annotations of
each level per step, so the worst ones come first and the rest are counted in one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath

from rich.console import Console

from ctxdoctor.findings import DispatchSite, Report
from ctxdoctor.render._common import belongs, gate_message, leak_groups, pct, registered, silent_groups

#: GitHub shows at most this many annotations of one level per step.
MAX_PER_LEVEL = 10


def escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def command(level: str, message: str, **props: str | int | None) -> str:
    """One workflow command line, e.g. ``::error file=a.py,title=x::message``."""
    parts = [f"{k}={escape_property(str(v))}" for k, v in props.items() if v not in (None, "")]
    head = f"::{level}" + (" " + ",".join(parts) if parts else "")
    return f"{head}::{escape_data(message)}"


def _in_workspace(site: DispatchSite | None, workspace: str | None) -> tuple[str | None, int | None, int | None]:
    """A dispatch site as GitHub places annotations: a path relative to the checkout, or nothing."""
    if site is None or workspace is None:
        return None, None, None
    try:
        rel = PurePath(site.file).relative_to(workspace)
    except ValueError:
        return None, None, None
    return rel.as_posix(), site.line, site.column


def workflow_commands(
    report: Report, *, file: str | None = None, line: int | None = None, workspace: str | None = None
) -> list[str]:
    """Workflow commands for the report: the gate verdict, each gap and each lost-parent group.

    Findings are errors when the gate failed and warnings otherwise. ``file``/``line`` place the
    gate's error on the config line holding the threshold. A gap or silent worker the probe saw
    under ``ctxdoctor run`` is placed on its dispatch site when that file is inside ``workspace``
    (the checkout), so it shows on the pull request's diff; others appear on the run's page.
    """
    failed = report.gate_failed
    level = "error" if failed else "warning"
    out: list[str] = []
    if failed:
        out.append(command("error", gate_message(report), title="ctxdoctor: gate failed", file=file, line=line))
    findings: list[str] = []
    for g in report.gaps:
        msg = (
            f"{g.occurrences} '{g.orphan_name}' root span(s) lost the context of '{g.parent_name}' across a "
            f"{g.boundary.value} boundary ({g.runtime}, confidence {g.confidence:.2f}).\n"
            f"Fix: {g.fix.title}.\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(g.fix.steps, 1))
        )
        title = f"ctxdoctor: {g.service}: {g.parent_name} -> {g.orphan_name}"
        site = next((o.dispatch_site for o in g.examples if o.dispatch_site is not None), None)
        path, row, col = _in_workspace(site, workspace)
        findings.append(command(level, msg, title=title, file=path, line=row, col=col))
    for w in report.silent_workers:
        where = w.site.label() if w.site else "an unknown site"
        msg = (
            f"{w.api} at {where} sent work to {w.workers} worker(s) that never registered an OpenTelemetry SDK; "
            f"their spans are dropped.\nFix: {w.fix.title}.\n"
            + "\n".join(f"{i}. {s}" for i, s in enumerate(w.fix.steps, 1))
        )
        path, row, col = _in_workspace(w.site, workspace)
        findings.append(command(level, msg, title="ctxdoctor: silent worker", file=path, line=row, col=col))
    for lost_group in report.lost_groups:
        service, name, remote = lost_group.service, lost_group.span_name, lost_group.parent_remote
        members = lost_group.members
        first = members[0]
        msg = (
            f"{len(members)} '{name}' span(s) whose {'remote' if remote else 'local'} parent never arrived: "
            f"{first.reason}."
        )
        if first.fix is not None:
            msg += f"\nFix: {first.fix.title}."
        findings.append(command(level, msg, title=f"ctxdoctor: {service}: lost parent of {name}"))
    for (service, parent, name), leaked in leak_groups(report.leaks):
        head = leaked[0]
        where = belongs(leaked)
        msg = (
            f"{len(leaked)} '{name}' span(s) leaked under '{parent}' ({where}, confidence {head.confidence:.2f}): "
            f"{'; '.join(head.evidence)}.\nFix: {head.fix.title}."
        )
        seen = registered(leaked)
        path, row, col = _in_workspace(seen.registration_site if seen else None, workspace)
        title = f"ctxdoctor: {service}: context leak {parent} -> {name}"
        findings.append(command(level, msg, title=title, file=path, line=row, col=col))
    for (service, name, bnd), silent in silent_groups(report.silent_dispatches):
        top = silent[0]
        msg = (
            f"{len(silent)} '{name}' span(s) handed work across a {bnd} boundary and nothing came back "
            f"(confidence {top.confidence:.2f}): {'; '.join(top.evidence)}.\nFix: {top.fix.title}."
        )
        findings.append(command("warning", msg, title=f"ctxdoctor: {service}: silent worker under {name}"))
    room = MAX_PER_LEVEL - (1 if failed else 0)
    if len(findings) > room:
        rest = len(findings) - (room - 1)
        findings = findings[: room - 1]
        findings.append(
            command(level, f"{rest} more finding(s); see the job summary or the report.", title="ctxdoctor")
        )
    out += findings
    for warning in report.warnings[:3]:
        out.append(command("warning", warning, title="ctxdoctor: input warning"))
    return out


# -- Markdown ------------------------------------------------------------------------------------
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|#~"})


def md(s: str) -> str:
    """User data (span and service names) as inert Markdown text inside a table cell."""
    return " ".join(s.translate(_MD_SPECIAL).split())


def _fence(code: str) -> str:
    ticks = "```"
    while ticks in code:
        ticks += "`"
    return ticks


def step_summary(report: Report, *, heading: str = "ctxdoctor", extra: Iterable[str] = ()) -> str:
    """The job summary: verdict, numbers, settings with their sources, gaps, lost parents, fixes."""
    s = report.summary
    st = report.settings
    if st.max_orphan_ratio is None:
        verdict = "no gate"
    else:
        verdict = "gate **failed** ❌" if report.gate_failed else "gate passed ✅"
    lines = [f"## {md(heading)}: {verdict}", ""]
    lines.append(
        f"**{s.spans:,}** spans in **{s.traces:,}** traces · suspected orphans **{s.suspected_orphans:,}** · "
        f"lost parents **{s.lost_parents:,}** · orphan ratio **{pct(s.orphan_ratio)}** "
        f"({s.broken_fragments:,}/{s.fragments:,} fragments)"
    )
    if s.leaked_spans or s.silent_dispatches:
        lines.append(
            f"\nleaked spans **{s.leaked_spans:,}** (counted as broken fragments) · silent dispatches "
            f"**{s.silent_dispatches:,}**"
        )
    if s.allowed_roots:
        lines.append(f"\n{s.allowed_roots:,} root(s) accepted by allow rules.")
    lines += [""] + [f"{e}" for e in extra]
    if report.warnings:
        lines += ["", *(f"> ⚠️ {md(w)}" for w in report.warnings)]
    lines += ["", "| setting | value | from |", "|---|---|---|"]
    values = {
        "max-orphan-ratio": "none" if st.max_orphan_ratio is None else f"{st.max_orphan_ratio:g}",
        "min-confidence": f"{st.min_confidence:g}",
        "allow": "; ".join(a.describe() for a in st.allow) or "none",
    }
    for key, value in values.items():
        lines.append(f"| {key} | {md(value)} | {md(st.source(key) or '')} |")
    if report.gaps:
        lines += [
            "",
            "### Propagation gaps (worst first)",
            "",
            "| # | service | dispatching span → orphan | boundary | seen | confidence |",
            "|---:|---|---|---|---:|---:|",
        ]
        for i, g in enumerate(report.gaps, 1):
            lines.append(
                f"| {i} | {md(g.service)} | {md(g.parent_name)} → {md(g.orphan_name)} | "
                f"{g.boundary.value} ({md(g.runtime)}) | {g.occurrences} ({pct(g.share)}) | {g.confidence:.2f} |"
            )
        sites = [
            (i, o.dispatch_site, o.dispatch_api)
            for i, g in enumerate(report.gaps, 1)
            for o in g.examples[:1]
            if o.dispatch_site is not None
        ]
        if sites:
            lines += ["", "Observed by the probe (`ctxdoctor run`):", ""]
            lines += [f"- gap {i}: dispatched at `{md(site.label())}` ({md(api)})" for i, site, api in sites]
    if report.silent_workers:
        lines += ["", "### Silent workers (no OpenTelemetry SDK where the work ran)", ""]
        for w in report.silent_workers:
            where = md(w.site.label()) if w.site else "unknown site"
            lines.append(f"- {md(w.api)} at `{where}`: {w.workers} worker(s), {w.dispatches} dispatches")
    if report.silent_processes:
        lines += ["", "### Silent processes (lived a while, exported no span)", ""]
        for p in report.silent_processes:
            lines.append(f"- pid {p.pid} `{md(p.command)}`: {p.lifetime_s:.1f}s")
        fix = next((p.fix for p in report.silent_processes if p.fix is not None), None)
        if fix is not None:
            # Code spans show backslashes literally: the APIs go in as they are, minus any backtick.
            apis = ", ".join(f"`{api.replace('`', '')}`" for api in fix.apis)
            lines += ["", f"Fix: {md(fix.title)} ({apis})"]
    lost = report.lost_groups
    if lost:
        lines += ["", "### Spans whose parent never arrived", ""]
        lines += ["| service | span | parent | spans |", "|---|---|---|---:|"]
        for group in lost:
            lines.append(
                f"| {md(group.service)} | {md(group.span_name)} | {'remote' if group.parent_remote else 'local'} | "
                f"{len(group.members)} |"
            )
    leaks = leak_groups(report.leaks)
    if leaks:
        lines += ["", "### Context leaks (spans under the wrong parent)", ""]
        lines += [
            "| service | wrong parent → span | where they belong | spans | confidence |",
            "|---|---|---|---:|---:|",
        ]
        for (service, parent, name), leaked in leaks:
            lines.append(
                f"| {md(service)} | {md(parent)} → {md(name)} | {md(belongs(leaked))} | "
                f"{len(leaked)} | {leaked[0].confidence:.2f} |"
            )
    silent = silent_groups(report.silent_dispatches)
    if silent:
        lines += ["", "### Silent dispatches (a worker exported nothing)", ""]
        lines += ["| service | span | boundary | spans | confidence |", "|---|---|---|---:|---:|"]
        for (service, name, bnd), quiet in silent:
            lines.append(f"| {md(service)} | {md(name)} | {bnd} | {len(quiet)} | {quiet[0].confidence:.2f} |")
    fixes = [(f"{md(g.service)}: {md(g.parent_name)} → {md(g.orphan_name)}", g.fix, g.runtime) for g in report.gaps]
    if lost and lost[0].members[0].fix is not None:
        service, name, members = lost[0].service, lost[0].span_name, lost[0].members
        fix = members[0].fix
        assert fix is not None
        fixes.append((f"{md(service)}: lost parents of {md(name)}", fix, members[0].span.unit.language or ""))
    for (service, parent, name), leaked in leaks[:3]:
        fixes.append(
            (f"{md(service)}: leak {md(parent)} → {md(name)}", leaked[0].fix, leaked[0].span.unit.language or "")
        )
    for (service, name, _), quiet in silent[:3]:
        fixes.append(
            (f"{md(service)}: silent worker under {md(name)}", quiet[0].fix, quiet[0].span.unit.language or "")
        )
    if fixes:
        lines += ["", "### Fixes"]
        for label, fix, runtime in fixes:
            lines += ["", f"<details><summary>{label}: {md(fix.title)}</summary>", ""]
            lines += [f"{i}. {md(step)}" for i, step in enumerate(fix.steps, 1)]
            if fix.snippet:
                fence = _fence(fix.snippet)
                lang = "javascript" if runtime == "nodejs" else "python" if runtime == "python" else ""
                lines += ["", f"{fence}{lang}", fix.snippet, fence]
            lines += ["", "</details>"]
    if not report.gaps and not lost and not leaks and not silent:
        lines += ["", "No propagation gaps and no lost parents."]
    return "\n".join(lines) + "\n"


class GithubRenderer:
    """``--format github``: the annotations, then the summary Markdown, on the given console."""

    name = "github"

    def render(self, report: Report, console: Console) -> None:
        for line in workflow_commands(report):
            console.file.write(line + "\n")
        console.file.write(step_summary(report))
