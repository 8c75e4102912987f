"""Renderers by name. Each turns the same ``Report`` into one output format."""

from __future__ import annotations

from ctxdoctor.render.github import GithubRenderer
from ctxdoctor.render.interface import Renderer
from ctxdoctor.render.json_report import JsonRenderer
from ctxdoctor.render.junit import JunitRenderer
from ctxdoctor.render.summary import SummaryRenderer
from ctxdoctor.render.terminal import TerminalRenderer

RENDERERS: dict[str, type[Renderer]] = {
    "terminal": TerminalRenderer,
    "json": JsonRenderer,
    "junit": JunitRenderer,
    "github": GithubRenderer,
    "summary": SummaryRenderer,
}


def get_renderer(name: str) -> Renderer:
    return RENDERERS[name]()
