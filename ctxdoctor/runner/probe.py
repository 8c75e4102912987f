"""Loading the probe into the command: the variables it takes, each chained, never replaced.

* ``NODE_OPTIONS`` gets ``--require <probe.cjs>`` in front of what the user set. Node.js runs
  ``--require`` preloads for CommonJS and ES module entry points alike, in every worker thread,
  and in every child that inherits the environment.
* ``PYTHONPATH`` gets the probe's folder in front. Its ``sitecustomize`` installs the probe and
  then imports the next ``sitecustomize`` on the path, so the user's own still runs.
* ``CTXDOCTOR_PROBE_FACTS`` names the side file every process appends its facts to;
  ``CTXDOCTOR_PROBE_VERBOSE=1`` lets the probe say (once each, on stderr) what it skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ctxdoctor.probe import NODE_PROBE, PYTHON_DIR

FACTS_VAR = "CTXDOCTOR_PROBE_FACTS"
VERBOSE_VAR = "CTXDOCTOR_PROBE_VERBOSE"


@dataclass(frozen=True)
class ProbePlan:
    facts: Path
    #: The variables set for the command (values shown in the banner; the user's parts are kept).
    changed: tuple[str, ...]


def _node_option(path: Path) -> str:
    text = str(path)
    if any(c in text for c in ' "\\'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"--require {text}"


def add_probe(env: dict[str, str], facts: Path, *, verbose: bool = False) -> ProbePlan:
    """Put the probe into ``env`` (the command's environment), in front of what is there."""
    node = _node_option(NODE_PROBE)
    existing = env.get("NODE_OPTIONS", "").strip()
    env["NODE_OPTIONS"] = f"{node} {existing}" if existing else node
    existing = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PYTHON_DIR) + (os.pathsep + existing if existing else "")
    env[FACTS_VAR] = str(facts)
    if verbose:
        env[VERBOSE_VAR] = "1"
    else:
        env.pop(VERBOSE_VAR, None)
    return ProbePlan(facts=facts, changed=("NODE_OPTIONS", "PYTHONPATH", FACTS_VAR))


def facts_path(dump: Path) -> Path:
    """The side file next to the dump, so a run's artefacts stay together."""
    return dump.with_name(dump.name + ".probe.jsonl")
