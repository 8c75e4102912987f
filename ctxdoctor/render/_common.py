"""Wording shared by the CI renderers (JUnit, GitHub), so both say the same thing the same way."""

from __future__ import annotations

from ctxdoctor.findings import NO_SPANS, Leak, Report, SilentDispatch


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


def registered(leaked: list[Leak]) -> Leak | None:
    """The first leak of a group whose callback's set-up the probe saw (its registration site)."""
    return next((lk for lk in leaked if lk.registration_site is not None), None)


def leak_groups(leaks: tuple[Leak, ...]) -> list[tuple[tuple[str, str, str], list[Leak]]]:
    """Leaked spans grouped by (service, wrong parent's name, span name), largest first."""
    groups: dict[tuple[str, str, str], list[Leak]] = {}
    for lk in leaks:
        groups.setdefault((lk.span.unit.service, lk.wrong_parent.name, lk.span.name), []).append(lk)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def silent_groups(
    silent: tuple[SilentDispatch, ...],
) -> list[tuple[tuple[str, str, str], list[SilentDispatch]]]:
    """Silent dispatches grouped by (service, span name, boundary), largest first."""
    groups: dict[tuple[str, str, str], list[SilentDispatch]] = {}
    for d in silent:
        groups.setdefault((d.span.unit.service, d.span.name, d.boundary.value), []).append(d)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def belongs(members: list[Leak]) -> str:
    """Where a group of leaked spans belongs, in words: under which span, or as roots."""
    named = [lk.likely_parent.name for lk in members if lk.likely_parent is not None]
    if not named:
        return "they should have been roots"
    where = max(set(named), key=named.count)
    rest = len(members) - len(named)
    return f"{len(named)} belong under '{where}'" + (f", {rest} should have been roots" if rest else "")
