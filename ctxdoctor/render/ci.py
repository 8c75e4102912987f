"""The CI outputs every command shares: report files and, inside GitHub Actions, annotations
and the job summary. ``analyze``, ``check``, ``run`` and ``listen`` call ``publish`` after
rendering, so the same report reaches the same places whichever command produced it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from ctxdoctor.errors import UsageError
from ctxdoctor.findings import Report
from ctxdoctor.render.github import step_summary, workflow_commands
from ctxdoctor.render.json_report import report_dict
from ctxdoctor.render.junit import junit_xml


def _write(path: Path, text: str, what: str) -> None:
    try:
        if path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the {what} {path}: {exc.strerror or exc}") from None


def _annotation_anchor(report: Report, environ: Mapping[str, str]) -> tuple[str | None, int | None]:
    """Point annotations at the config line holding the threshold, when it came from a file.

    That is the line a reviewer would change (or defend), and it is in the repository, so GitHub
    can show the annotation in the pull request's diff view.
    """
    cfg = report.settings.config_file
    if not cfg or report.settings.source("max-orphan-ratio") in (None, "default", "command line"):
        return None, None
    path = Path(cfg).resolve()
    root = Path(environ.get("GITHUB_WORKSPACE") or os.getcwd()).resolve()
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        return None, None
    line = None
    try:
        for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.match(r"\s*max-orphan-ratio\s*=", text):
                line = n
                break
    except OSError:
        pass
    return rel, line


def publish(
    report: Report,
    *,
    junit: Path | None = None,
    json_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    annotations_to: IO[str] | None = None,
    extra_json: Mapping[str, Any] | None = None,
    summary_heading: str = "ctxdoctor",
    summary_extra: Iterable[str] = (),
    elapsed: float = 0.0,
) -> None:
    """Write the requested report files; in GitHub Actions also annotate and summarise.

    ``GITHUB_ACTIONS=true`` turns on the ``::error``/``::warning`` lines (to ``annotations_to``);
    a ``GITHUB_STEP_SUMMARY`` path gets the Markdown summary appended (the runner concatenates
    what every step appends).
    """
    env = os.environ if environ is None else environ
    if junit is not None:
        _write(junit, junit_xml(report, elapsed=elapsed), "JUnit report")
    if json_path is not None:
        data = report_dict(report)
        if extra_json:
            data.update(extra_json)
        _write(json_path, json.dumps(data, indent=2) + "\n", "JSON report")
    if env.get("GITHUB_ACTIONS") == "true" and annotations_to is not None:
        file, line = _annotation_anchor(report, env)
        workspace = str(Path(env.get("GITHUB_WORKSPACE") or os.getcwd()).resolve())
        for cmd in workflow_commands(report, file=file, line=line, workspace=workspace):
            annotations_to.write(cmd + "\n")
        annotations_to.flush()
    summary_path = env.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        try:
            with open(summary_path, "a", encoding="utf-8") as fh:
                fh.write(step_summary(report, heading=summary_heading, extra=summary_extra) + "\n")
        except OSError as exc:
            raise UsageError(f"cannot append to GITHUB_STEP_SUMMARY ({summary_path}): {exc.strerror or exc}") from None
