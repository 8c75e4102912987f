"""JUnit XML: the report as test results, so GitLab, Jenkins and GitHub test views show the gaps.

One test case per propagation gap and per group of lost parents (failing when the gate fails,
passing with the details in ``system-out`` when it passes or there is no gate), plus one summary
case for the orphan ratio itself. Test case names carry no counts or ids, so a CI system's test
history follows the same gap from run to run. The settings applied and where each came from are
``<properties>``. The layout follows the common (Jenkins/Ant, "junit-10") schema; the tests check
it against that XSD.
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

from rich.console import Console

from ctxdoctor.findings import Gap, Leak, MissingParent, Report, SilentDispatch
from ctxdoctor.render._common import belongs, gate_message, leak_groups, registered, silent_groups

SUITE = "ctxdoctor"
# XML 1.0 forbids most control characters; span names are user data and may contain them.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text: str) -> str:
    return _INVALID_XML.sub("\ufffd", text)


def _fix_text(title: str, steps: tuple[str, ...], snippet: str) -> str:
    lines = [f"Fix: {title}"] + [f"  {i}. {s}" for i, s in enumerate(steps, 1)]
    if snippet:
        lines += ["", snippet]
    return "\n".join(lines)


def _gap_text(g: Gap) -> str:
    ex = g.examples[0] if g.examples else None
    lines = [
        f"service: {g.service}",
        f"gap: {g.parent_name} -> {g.orphan_name} across a {g.boundary.value} boundary ({g.runtime})",
        f"seen: {g.occurrences} of {g.roots_with_name} '{g.orphan_name}' roots, confidence {g.confidence:.2f}",
    ]
    if ex is not None:
        if ex.dispatch_site is not None:
            lines.append(f"dispatched at: {ex.dispatch_site.label()} ({ex.dispatch_api}; observed by the probe)")
        lines.append(f"why: {'; '.join(ex.evidence)}" if ex.evidence else f"boundary: {ex.boundary_evidence}")
    lines += ["", _fix_text(g.fix.title, g.fix.steps, g.fix.snippet)]
    return "\n".join(lines)


def _lost_text(members: tuple[MissingParent, ...]) -> str:
    first = members[0]
    lines = [
        f"service: {first.span.unit.service}",
        f"{len(members)} '{first.span.name}' span(s) whose {'remote' if first.parent_remote else 'local'} parent "
        "never arrived",
        f"why: {first.reason}",
    ]
    if first.fix is not None:
        lines += ["", _fix_text(first.fix.title, first.fix.steps, first.fix.snippet)]
    return "\n".join(lines)


def _finding_text(first: Leak | SilentDispatch, what: str, seen: Leak | None = None) -> str:
    """A leak's or a silent dispatch's body: where, what, the evidence and the fix."""
    lines = [f"service: {first.span.unit.service}", f"{what}, confidence {first.confidence:.2f}"]
    if seen is not None and seen.registration_site is not None:
        lines.append(
            f"registered at: {seen.registration_site.label()} ({seen.registration_api}; observed by the probe)"
        )
    lines += [
        f"why: {'; '.join(first.evidence)}",
        "",
        _fix_text(first.fix.title, first.fix.steps, first.fix.snippet),
    ]
    return "\n".join(lines)


def leak_text(members: list[Leak]) -> str:
    first = members[0]
    what = f"{len(members)} '{first.span.name}' span(s) recorded under '{first.wrong_parent.name}' ({belongs(members)})"
    return _finding_text(first, what, registered(members))


def silent_text(members: list[SilentDispatch]) -> str:
    first = members[0]
    what = (
        f"{len(members)} '{first.span.name}' span(s) handed work across a {first.boundary.value} boundary and "
        "nothing came back"
    )
    return _finding_text(first, what)


def properties(report: Report) -> list[tuple[str, str]]:
    st = report.settings
    s = report.summary
    props: list[tuple[str, str]] = [
        ("max-orphan-ratio", "none" if st.max_orphan_ratio is None else f"{st.max_orphan_ratio:g}"),
        ("min-confidence", f"{st.min_confidence:g}"),
        ("allow", "; ".join(a.describe() for a in st.allow)),
    ]
    props += [(f"{key}.source", where) for key, where in st.sources]
    if st.config_file:
        props.append(("config-file", st.config_file))
    props += [
        ("spans", str(s.spans)),
        ("traces", str(s.traces)),
        ("roots", str(s.roots)),
        ("suspected-orphans", str(s.suspected_orphans)),
        ("allowed-roots", str(s.allowed_roots)),
        ("lost-parents", str(s.lost_parents)),
        ("leaked-spans", str(s.leaked_spans)),
        ("silent-dispatches", str(s.silent_dispatches)),
        ("silent-processes", str(len(report.silent_processes))),
        ("orphan-ratio", f"{s.orphan_ratio:.6f}"),
    ]
    props += [("file", f) for f in report.files]
    return props


def junit_tree(report: Report, *, elapsed: float = 0.0) -> ET.Element:
    failing = report.gate_failed
    cases: list[ET.Element] = []

    def case(classname: str, name: str, failure: tuple[str, str, str] | None, out: str) -> None:
        el = ET.Element("testcase", {"classname": _x(classname), "name": _x(name), "time": "0.000"})
        if failure is not None:
            ftype, message, body = failure
            f = ET.SubElement(el, "failure", {"type": ftype, "message": _x(message)})
            f.text = _x(body)
        elif out:
            ET.SubElement(el, "system-out").text = _x(out)
        cases.append(el)

    summary_body = gate_message(report)
    case(
        f"{SUITE}.gate",
        "orphan ratio",
        ("ctxdoctor.GateFailed", gate_message(report), summary_body) if failing else None,
        summary_body,
    )
    # (class name, test name, failure type, failure message, details) per finding.
    findings = [
        (
            f"{SUITE}.gaps.{g.service}",
            f"{g.parent_name} -> {g.orphan_name}",
            "ctxdoctor.PropagationGap",
            f"{g.occurrences} '{g.orphan_name}' root(s) lost the context of '{g.parent_name}' "
            f"({g.boundary.value} boundary, confidence {g.confidence:.2f})",
            _gap_text(g),
        )
        for g in report.gaps
    ]
    for w in report.silent_workers:
        where = w.site.label() if w.site else "unknown site"
        message = f"{w.api} at {where} sent work to {w.workers} worker(s) with no OpenTelemetry SDK"
        body = "\n".join(
            [
                message,
                f"dispatches: {w.dispatches} ({w.with_span} inside a span); every span made there is dropped",
                "",
                _fix_text(w.fix.title, w.fix.steps, w.fix.snippet),
            ]
        )
        findings.append((f"{SUITE}.silent-workers", f"{w.api} at {where}", "ctxdoctor.SilentWorker", message, body))
    for lost in report.lost_groups:
        where = "remote" if lost.parent_remote else "local"
        findings.append(
            (
                f"{SUITE}.lost-parents.{lost.service}",
                f"{lost.span_name} ({where} parent never arrived)",
                "ctxdoctor.LostParent",
                f"{len(lost.members)} '{lost.span_name}' span(s) whose {where} parent never arrived",
                _lost_text(lost.members),
            )
        )
    for (service, parent, name), leaked in leak_groups(report.leaks):
        findings.append(
            (
                f"{SUITE}.leaks.{service}",
                f"{parent} -> {name} (context leak)",
                "ctxdoctor.ContextLeak",
                f"{len(leaked)} '{name}' span(s) leaked under '{parent}'",
                leak_text(leaked),
            )
        )
    for classname, name, kind, message, body in findings:
        case(classname, name, (kind, message, body) if failing else None, body)
    # Silent dispatches are not in the ratio, so they never fail the gate: reported, not failed.
    for (service, name, bnd), silent in silent_groups(report.silent_dispatches):
        case(f"{SUITE}.silent.{service}", f"{name} ({bnd} worker exported nothing)", None, silent_text(silent))
    # A process that exported nothing is a fact from `run`'s process tree; like a silent dispatch
    # it is not in the ratio, so it is reported, not failed.
    for proc in report.silent_processes:
        lines = [
            f"pid {proc.pid} ({proc.command or 'unknown command'}) ran {proc.lifetime_s:.1f}s and exported no span"
            + (f"; its parent is pid {proc.parent_pid}" if proc.parent_pid is not None else "")
        ]
        if proc.fix is not None:
            lines += ["", _fix_text(proc.fix.title, proc.fix.steps, proc.fix.snippet)]
        case(f"{SUITE}.silent-processes", f"pid {proc.pid} {proc.command}".rstrip(), None, "\n".join(lines))
    failures = sum(1 for c in cases if c.find("failure") is not None)
    attrs = {
        "name": SUITE,
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": "0",
        "skipped": "0",
        "time": f"{elapsed:.3f}",
        "timestamp": datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None).isoformat(),
        "hostname": socket.gethostname(),
    }
    suites = ET.Element(
        "testsuites",
        {"name": SUITE, "tests": attrs["tests"], "failures": attrs["failures"], "errors": "0", "time": attrs["time"]},
    )
    suite = ET.SubElement(suites, "testsuite", attrs)
    props = ET.SubElement(suite, "properties")
    for name, value in properties(report):
        ET.SubElement(props, "property", {"name": _x(name), "value": _x(value)})
    suite.extend(cases)
    if report.warnings:
        ET.SubElement(suite, "system-err").text = _x("\n".join(f"warning: {w}" for w in report.warnings))
    ET.indent(suites)
    return suites


def junit_xml(report: Report, *, elapsed: float = 0.0) -> str:
    root = junit_tree(report, elapsed=elapsed)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


class JunitRenderer:
    name = "junit"

    def render(self, report: Report, console: Console) -> None:
        console.file.write(junit_xml(report))
