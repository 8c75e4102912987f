"""The probe ``ctxdoctor run`` loads into the command it runs, and the facts it writes.

The probe's own files (``node/probe.cjs``, ``python/sitecustomize.py`` and
``python/_ctxdoctor_probe.py``) run inside the user's processes, on their runtime, so they use
nothing but that runtime's standard library. ``facts`` reads what they wrote.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_PROBE = HERE / "node" / "probe.cjs"
PYTHON_DIR = HERE / "python"
