"""Configuration: where it is found, what it may say, how the command line overrides it, and the
allow rules' effect on a real recorded dump."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctxdoctor.cli import run
from ctxdoctor.config import find_config, load_config, resolve_settings
from ctxdoctor.errors import UsageError
from ctxdoctor.exitcodes import ExitCode
from ctxdoctor.findings import Settings
from tests.helpers import ROOT

NAIVE = ROOT / "fixtures" / "scenarios" / "node-worker-threads-naive" / "dump.json"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- discovery -----------------------------------------------------------------------------------
def test_found_from_a_subdirectory_upwards(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n\n[tool.ctxdoctor]\nmax-orphan-ratio = 0.05\n')
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_config(deep) == cfg.resolve()


def test_pyproject_without_the_table_is_passed_over(tmp_path: Path) -> None:
    outer = _write(tmp_path / "ctxdoctor.toml", "min-confidence = 0.7\n")
    _write(tmp_path / "sub" / "pyproject.toml", '[project]\nname = "inner"\n')
    assert find_config(tmp_path / "sub") == outer.resolve()


def test_ctxdoctor_toml_wins_over_pyproject_in_the_same_directory(tmp_path: Path) -> None:
    _write(tmp_path / "pyproject.toml", "[tool.ctxdoctor]\nmax-orphan-ratio = 0.5\n")
    own = _write(tmp_path / "ctxdoctor.toml", "max-orphan-ratio = 0.01\n")
    assert find_config(tmp_path) == own.resolve()
    assert resolve_settings(cwd=tmp_path).max_orphan_ratio == 0.01


def test_nothing_found_means_defaults(tmp_path: Path) -> None:
    settings = resolve_settings(cwd=tmp_path)
    assert settings.max_orphan_ratio is None
    assert settings.min_confidence == Settings().min_confidence == 0.85
    assert settings.allow == ()
    assert dict(settings.sources) == {"max-orphan-ratio": "default", "min-confidence": "default", "allow": "default"}


# -- precedence and sources ----------------------------------------------------------------------
def test_command_line_overrides_the_file_and_each_source_is_recorded(tmp_path: Path) -> None:
    _write(
        tmp_path / "pyproject.toml",
        '[tool.ctxdoctor]\nmax-orphan-ratio = 0.2\nmin-confidence = 0.8\nallow = [{service = "api", name = "cron"}]\n',
    )
    settings = resolve_settings(max_orphan_ratio=0.05, cwd=tmp_path)
    assert settings.max_orphan_ratio == 0.05
    assert settings.min_confidence == 0.8
    assert [(a.service, a.name) for a in settings.allow] == [("api", "cron")]
    assert settings.source("max-orphan-ratio") == "command line"
    assert settings.source("min-confidence") == "pyproject.toml [tool.ctxdoctor]"
    assert settings.source("allow") == "pyproject.toml [tool.ctxdoctor]"
    assert settings.config_file == str(tmp_path / "pyproject.toml")


def test_explicit_config_file(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "ci" / "gate.toml", "max-orphan-ratio = 0.3\n")
    settings = resolve_settings(config=cfg, cwd=tmp_path)
    assert settings.max_orphan_ratio == 0.3
    assert settings.source("max-orphan-ratio") == "ci/gate.toml"


# -- bad configuration: exit 2, naming the file and the key --------------------------------------
@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("max_orphan_ratio = 0.1\n", ["unknown key 'max_orphan_ratio'", "did you mean 'max-orphan-ratio'"]),
        ("max-orphan-ratio = 1.5\n", ["max-orphan-ratio", "between 0 and 1", "1.5"]),
        ('min-confidence = "high"\n', ["min-confidence", "between 0 and 1"]),
        ("max-orphan-ratio = true\n", ["max-orphan-ratio", "between 0 and 1"]),
        ('allow = "cron"\n', ["allow", "array of tables"]),
        ('attribute-values = "yes"\n', ["attribute-values", "true or false"]),
        ("allow = [{}]\n", ["allow[0]", "needs 'service', 'name' or both"]),
        ('allow = [{service = "a", span = "b"}]\n', ["allow[0]", "unknown key 'span'"]),
        ('allow = [{service = ""}]\n', ["allow[0].service", "non-empty string"]),
        ("max-orphan-ratio = \n", ["not valid TOML", "line 1"]),
    ],
)
def test_bad_config_is_a_usage_error_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needles: list[str]
) -> None:
    cfg = _write(tmp_path / "ctxdoctor.toml", text)
    with pytest.raises(UsageError) as info:
        load_config(cfg)
    for needle in needles:
        assert needle in str(info.value)
    assert str(cfg) in str(info.value)
    code = run(["analyze", str(NAIVE), "--config", str(cfg)])
    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "ctxdoctor.toml" in err and needles[0] in " ".join(err.split())


def test_bad_pyproject_table_names_the_table(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "pyproject.toml", "[tool.ctxdoctor]\nthreshold = 0.1\n")
    with pytest.raises(UsageError, match=r"pyproject.toml: \[tool.ctxdoctor\] unknown key 'threshold'"):
        load_config(cfg)


def test_missing_explicit_config_is_a_usage_error(tmp_path: Path) -> None:
    assert run(["analyze", str(NAIVE), "--config", str(tmp_path / "nope.toml")]) == ExitCode.USAGE


# -- the gate and the allow-list on a real dump ---------------------------------------------------
def _analyze_json(tmp_path: Path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "report.json"
    code = run(["analyze", str(NAIVE), "-f", "json", "-o", str(out), *args])
    return int(code), json.loads(out.read_text())


def test_threshold_from_the_config_gates_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "ctxdoctor.toml", "max-orphan-ratio = 0.05\n")
    monkeypatch.chdir(tmp_path)
    assert run(["check", str(NAIVE)]) == ExitCode.GATE_FAILED
    # The command line still wins.
    assert run(["check", str(NAIVE), "--max-orphan-ratio", "1"]) == ExitCode.OK


def test_check_without_any_threshold_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["check", str(NAIVE)]) == ExitCode.USAGE


def test_allow_rule_accepts_a_known_root_without_lowering_the_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, before = _analyze_json(tmp_path, "--max-orphan-ratio", "0.05")
    assert code == ExitCode.GATE_FAILED
    flagged = [o for o in before["orphans"] if o["name"] == "worker_process"]
    assert flagged, "the naive dump must have worker_process orphans to allow"

    _write(
        tmp_path / "ctxdoctor.toml",
        'max-orphan-ratio = 0.05\nallow = [{service = "thumbnailer", name = "worker_*", reason = "known"}]\n',
    )
    code, after = _analyze_json(tmp_path)
    assert not [o for o in after["orphans"] if o["name"] == "worker_process"]
    assert after["summary"]["allowed_roots"] == len(flagged)
    assert after["summary"]["suspected_orphans"] == before["summary"]["suspected_orphans"] - len(flagged)
    assert after["settings"]["allow"] == [{"service": "thumbnailer", "name": "worker_*", "reason": "known"}]
    assert after["settings"]["sources"]["allow"] == "ctxdoctor.toml"
    assert after["settings"]["sources"]["max-orphan-ratio"] == "ctxdoctor.toml"
    assert after["gate"]["failed"] is (after["summary"]["orphan_ratio"] > 0.05)


def test_allow_rule_for_another_service_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _, before = _analyze_json(tmp_path)
    _write(tmp_path / "ctxdoctor.toml", 'allow = [{service = "billing", name = "worker_process"}]\n')
    _, after = _analyze_json(tmp_path)
    assert after["summary"]["suspected_orphans"] == before["summary"]["suspected_orphans"]
    assert after["summary"]["allowed_roots"] == 0


def test_terminal_report_says_which_settings_were_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "pyproject.toml", "[tool.ctxdoctor]\nmin-confidence = 0.6\n")
    monkeypatch.chdir(tmp_path)
    run(["check", str(NAIVE), "--max-orphan-ratio", "0.9"])
    out = " ".join(capsys.readouterr().out.split())
    assert "max-orphan-ratio 0.9 (command line)" in out
    assert "min-confidence 0.6 (pyproject.toml [tool.ctxdoctor])" in out


def test_attribute_values_from_the_file_or_the_command_line_and_by_default_from_the_size(tmp_path: Path) -> None:
    assert resolve_settings(cwd=tmp_path).attribute_values is None  # the input's size decides
    cfg = _write(tmp_path / "ctxdoctor.toml", "attribute-values = true\n")
    from_file = resolve_settings(config=cfg)
    assert from_file.attribute_values is True and from_file.source("attribute-values") is not None
    over = resolve_settings(config=cfg, attribute_values=False)
    assert over.attribute_values is False and over.source("attribute-values") == "command line"


def test_the_attribute_values_switch_reaches_the_diagnosis(capsys: pytest.CaptureFixture[str]) -> None:
    # The recording puts the image id on the request and on the worker's span: with the values
    # read, the evidence names the shared attribute; without them, it cannot.
    def evidence(*flag: str) -> str:
        assert run(["analyze", str(NAIVE), "-f", "json", *flag]) == ExitCode.OK
        return " ".join(e for o in json.loads(capsys.readouterr().out)["orphans"] for e in o["evidence"])

    assert "'image.id' value" in evidence("--attribute-values")
    assert "'image.id' value" not in evidence("--no-attribute-values")
