"""Settings from ``[tool.ctxdoctor]`` in ``pyproject.toml`` or from ``ctxdoctor.toml``.

A team puts its bar (threshold, confidence, accepted roots) in the repository so every CI job
and every developer applies the same one, while a command-line option still wins for a one-off
run. Each resolved setting remembers where it came from, because "why did CI fail here and not
on my machine" is usually answered by which file was picked up.

Lookup: ``--config FILE`` names the file; otherwise the current directory and then each parent
is searched for ``ctxdoctor.toml`` (keys at the top level) and then ``pyproject.toml`` (keys
under ``[tool.ctxdoctor]``); a ``pyproject.toml`` without that table is passed over, as ruff and
mypy do, so a nested package's ``pyproject.toml`` does not hide the repository's settings.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxdoctor.errors import UsageError
from ctxdoctor.findings import Allow, Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CONFIG_FILE = "ctxdoctor.toml"
PYPROJECT = "pyproject.toml"
KEYS = ("max-orphan-ratio", "min-confidence", "attribute-values", "allow")
ALLOW_KEYS = ("service", "name", "reason")
DEFAULT = "default"
COMMAND_LINE = "command line"


@dataclass(frozen=True)
class ConfigFile:
    """The settings one file gives, already checked."""

    path: Path
    table: str  # where in the file: "[tool.ctxdoctor]" or "" for ctxdoctor.toml's top level
    values: dict[str, Any] = field(default_factory=dict)

    def describe(self, cwd: Path | None = None) -> str:
        shown = _display_path(self.path, cwd)
        return f"{shown} {self.table}" if self.table else shown


def _display_path(path: Path, cwd: Path | None) -> str:
    cwd = cwd or Path.cwd()
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path.resolve())


def find_config(start: Path | None = None) -> Path | None:
    """The nearest file with ctxdoctor settings, from ``start`` (default: cwd) upwards."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_FILE
        if candidate.is_file():
            return candidate
        candidate = directory / PYPROJECT
        if candidate.is_file() and _has_tool_table(candidate):
            return candidate
    return None


def _has_tool_table(path: Path) -> bool:
    # A broken pyproject.toml that might hold our table is an error worth showing, not skipping.
    data = _read_toml(path)
    tool = data.get("tool")
    return isinstance(tool, dict) and "ctxdoctor" in tool


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the configuration: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None


def load_config(path: Path) -> ConfigFile:
    """Read and check one file; every problem names the file and the key."""
    data = _read_toml(path)
    if path.name == PYPROJECT:
        tool = data.get("tool", {})
        raw = tool.get("ctxdoctor") if isinstance(tool, dict) else None
        if raw is None:
            raise UsageError(f"{path}: has no [tool.ctxdoctor] table")
        table = "[tool.ctxdoctor]"
    else:
        raw, table = data, ""
    where = f"{path}: {table + ' ' if table else ''}"
    if not isinstance(raw, dict):
        raise UsageError(f"{where.rstrip(': ')}: must be a table of settings")
    return ConfigFile(path=path, table=table, values=_check(raw, where))


def _unknown(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key.replace("_", "-"), known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{key}'{hint}; known keys: {', '.join(known)}"


def _ratio(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise UsageError(f"{where}{key}: must be a number between 0 and 1, got {value!r}")
    return float(value)


def _check(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in KEYS:
            raise UsageError(f"{where}{_unknown(key, KEYS)}")
        if key in ("max-orphan-ratio", "min-confidence"):
            out[key] = _ratio(value, where, key)
        elif key == "attribute-values":
            if not isinstance(value, bool):
                raise UsageError(f"{where}{key}: must be true or false, got {value!r}")
            out[key] = value
        else:
            out[key] = _allow_rules(value, where)
    return out


def _allow_rules(value: Any, where: str) -> tuple[Allow, ...]:
    if not isinstance(value, list):
        raise UsageError(f'{where}allow: must be an array of tables, e.g. allow = [{{service = "api", name = "cron"}}]')
    rules = []
    for i, item in enumerate(value):
        at = f"{where}allow[{i}]"
        if not isinstance(item, dict):
            raise UsageError(f'{at}: must be a table like {{service = "api", name = "nightly-report"}}')
        for key, v in item.items():
            if key not in ALLOW_KEYS:
                raise UsageError(f"{at}: {_unknown(key, ALLOW_KEYS)}")
            if not isinstance(v, str) or (key != "reason" and not v):
                raise UsageError(f"{at}.{key}: must be a non-empty string, got {v!r}")
        if "service" not in item and "name" not in item:
            # An empty rule would accept every root: that is lowering the bar, not an allow-list.
            raise UsageError(f"{at}: needs 'service', 'name' or both (a rule matching everything is not allowed)")
        rules.append(Allow(service=item.get("service"), name=item.get("name"), reason=item.get("reason", "")))
    return tuple(rules)


def resolve_settings(
    *,
    max_orphan_ratio: float | None = None,
    min_confidence: float | None = None,
    attribute_values: bool | None = None,
    config: Path | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Command line over file over defaults, with each setting's source recorded.

    ``config`` names a file explicitly (it must exist); otherwise one is looked for from ``cwd``.
    Allow rules come from the file only: an allow-list is a reviewed decision, not a flag.
    """
    if config is not None:
        if not config.is_file():
            raise UsageError(f"--config {config}: no such file")
        cfg: ConfigFile | None = load_config(config)
    else:
        found = find_config(cwd)
        cfg = load_config(found) if found is not None else None
    file_values = cfg.values if cfg is not None else {}
    from_file = cfg.describe(cwd) if cfg is not None else ""
    defaults = Settings()
    sources: list[tuple[str, str]] = []

    def pick(key: str, cli: Any, default: Any) -> Any:
        if cli is not None:
            sources.append((key, COMMAND_LINE))
            return cli
        if key in file_values:
            sources.append((key, from_file))
            return file_values[key]
        sources.append((key, DEFAULT))
        return default

    ratio = pick("max-orphan-ratio", max_orphan_ratio, defaults.max_orphan_ratio)
    confidence = pick("min-confidence", min_confidence, defaults.min_confidence)
    allow = pick("allow", None, ())
    # Recorded only where given: the default depends on the input's size, not on a setting.
    values = attribute_values if attribute_values is not None else file_values.get("attribute-values")
    if attribute_values is not None:
        sources.append(("attribute-values", COMMAND_LINE))
    elif values is not None:
        sources.append(("attribute-values", from_file))
    return Settings(
        min_confidence=confidence,
        max_orphan_ratio=ratio,
        allow=allow,
        attribute_values=values,
        sources=tuple(sources),
        config_file=str(cfg.path) if cfg is not None else None,
    )
