"""Access to the recorded real-SDK scenarios under fixtures/scenarios/."""

from __future__ import annotations

import importlib.util
import json
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from ctxdoctor.diagnose import diagnose
from ctxdoctor.findings import Report, Settings
from ctxdoctor.readers import read_paths

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "fixtures" / "scenarios"


def scenario_names() -> list[str]:
    return sorted(p.parent.name for p in SCENARIOS.glob("*/scenario.json") if (p.parent / "dump.json").exists())


def spec(name: str) -> dict[str, Any]:
    return json.loads((SCENARIOS / name / "scenario.json").read_text())


def truth(name: str) -> list[dict[str, Any]]:
    path = SCENARIOS / name / "truth.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


@cache
def report(name: str, max_orphan_ratio: float | None = None) -> Report:
    dump = read_paths([SCENARIOS / name / "dump.json"])
    return diagnose(dump.spans, Settings(max_orphan_ratio=max_orphan_ratio), warnings=[str(w) for w in dump.warnings])


@cache
def load_recorder() -> ModuleType:
    """``fixtures/record.py``: fixtures/ is not a package, and tests use the one recorder the
    project uses rather than a copy of it."""
    name = "ctxdoctor_fixtures_record"
    spec = importlib.util.spec_from_file_location(name, ROOT / "fixtures" / "record.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module
