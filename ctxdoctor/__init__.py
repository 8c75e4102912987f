"""ctxdoctor: find where an app loses OpenTelemetry context, and say what to change.

As a library: ``analyze_paths(paths, Settings(...))`` returns the ``Report`` every command
renders (see ``ctxdoctor.analysis``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Report", "Settings", "__version__", "analyze_paths"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``python -m ctxdoctor.analysis`` (the fresh interpreter)
    # and the CLI's start-up do not load the readers and the diagnosis twice or too early.
    if name == "analyze_paths":
        from ctxdoctor.analysis import analyze_paths

        return analyze_paths
    if name in ("Report", "Settings"):
        from ctxdoctor import findings

        return getattr(findings, name)
    raise AttributeError(f"module 'ctxdoctor' has no attribute {name!r}")
