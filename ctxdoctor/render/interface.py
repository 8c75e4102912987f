"""The render stage: each output format turns the same ``Report`` into output.

A new format is one module with a class satisfying ``Renderer`` and one entry in
``render/__init__.py``. Renderers write to a rich ``Console`` they are given, so the CLI picks
the destination (terminal, file) and tests render into a string.
"""

from __future__ import annotations

from typing import Protocol

from rich.console import Console

from ctxdoctor.findings import Report


class Renderer(Protocol):
    name: str

    def render(self, report: Report, console: Console) -> None: ...
