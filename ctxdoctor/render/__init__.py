"""Renderers by name. Each turns the same ``Report`` into one output format."""

from __future__ import annotations

from ctxdoctor.render.interface import Renderer
from ctxdoctor.render.json_report import JsonRenderer
from ctxdoctor.render.terminal import TerminalRenderer

RENDERERS: dict[str, type[Renderer]] = {
    "terminal": TerminalRenderer,
    "json": JsonRenderer,
}


def get_renderer(name: str) -> Renderer:
    return RENDERERS[name]()
