"""The documentation and the real command line agree: every command is documented, every option
of every command is in its table in docs/commands.md and no table lists an option the command
lacks, and every option a README example passes exists."""

from __future__ import annotations

import re
import shlex

import pytest
import typer

from ctxdoctor.cli import app
from tests.helpers import ROOT

COMMANDS_DOC = (ROOT / "docs" / "commands.md").read_text()
README = (ROOT / "README.md").read_text()
_CLI = typer.main.get_command(app)
NAMES = sorted(_CLI.commands)  # type: ignore[attr-defined]
_HEADING = re.compile(r"^## `ctxdoctor (\w+)", re.M)
_OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")


def _options(name: str) -> set[str]:
    """Every option spelling of a command, long and short, without --help/-h."""
    command = _CLI.commands[name]  # type: ignore[attr-defined]
    spelled = {o for p in command.params for o in [*p.opts, *p.secondary_opts] if o.startswith("-")}
    return spelled - {"--help", "-h"}


def _section(name: str) -> str:
    starts = {m.group(1): m.start() for m in _HEADING.finditer(COMMANDS_DOC)}
    begin = starts[name]
    after = [s for s in starts.values() if s > begin]
    return COMMANDS_DOC[begin : min(after) if after else len(COMMANDS_DOC)]


def _documented_options(name: str) -> set[str]:
    rows = [line for line in _section(name).splitlines() if line.startswith("| `-")]
    return {opt for row in rows for opt in _OPTION.findall(row.split("|")[1])}


def test_every_command_has_its_section_and_no_other() -> None:
    assert sorted(m.group(1) for m in _HEADING.finditer(COMMANDS_DOC)) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_the_options_table_lists_exactly_the_commands_options(name: str) -> None:
    documented, real = _documented_options(name), _options(name)
    assert not real - documented, f"ctxdoctor {name}: not documented in docs/commands.md: {sorted(real - documented)}"
    assert not documented - real, f"ctxdoctor {name}: documented but not an option: {sorted(documented - real)}"


def test_readme_names_every_command() -> None:
    for name in NAMES:
        assert f"**`ctxdoctor {name}" in README, f"README has no paragraph on ctxdoctor {name}"


def _readme_invocations() -> list[list[str]]:
    """Every ``ctxdoctor COMMAND ...`` in the README's code blocks (a folded YAML ``run: >`` joined
    into one line), split as a shell would, up to the wrapped command's ``--``."""
    out = []
    for block in re.findall(r"```(?:sh|console|yaml)\n(.*?)```", README, re.S):
        text = re.sub(r">\n\s+|\n\s{6,}", " ", block)
        commands = "|".join(NAMES)
        for m in re.finditer(rf"\bctxdoctor ({commands})\b(?![:`])([^\n#]*)", text):
            out.append([m.group(1), *shlex.split(m.group(2).split(" -- ")[0])])
    return out


def test_readme_examples_use_real_options() -> None:
    calls = _readme_invocations()
    assert {c[0] for c in calls} == set(NAMES), "every command has an example"
    for name, *args in calls:
        used = {a.split("=")[0] for a in args if a.startswith("-")}
        assert used <= _options(name), f"README: ctxdoctor {name} {' '.join(args)}: {sorted(used - _options(name))}"
