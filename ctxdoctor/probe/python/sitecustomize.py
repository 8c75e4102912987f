"""Loads ctxdoctor's probe into this process, then the ``sitecustomize`` it stands in front of.

``ctxdoctor run`` puts this folder first on ``PYTHONPATH``. Python imports only one module named
``sitecustomize``, so after installing the probe this one imports the next on the path (the
app's own, or its virtualenv's) exactly as Python would have: a missing one is no error, and an
error inside it reaches ``site`` as it would have without the probe.
"""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
try:
    import _ctxdoctor_probe

    _ctxdoctor_probe.install()
except Exception as _exc:  # the probe never stops the app
    if os.environ.get("CTXDOCTOR_PROBE_VERBOSE") == "1":
        sys.stderr.write(f"ctxdoctor probe: not loaded: {_exc!r}\n")


def _chain() -> None:
    me = sys.modules.pop("sitecustomize", None)
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    try:
        import importlib

        try:
            importlib.import_module("sitecustomize")
        except ImportError as exc:
            if exc.name != "sitecustomize":
                raise
            if me is not None:
                sys.modules["sitecustomize"] = me
    finally:
        # Keep this folder on the path: multiprocessing children unpickle the probe's task wrapper.
        sys.path[:] = saved + [p for p in sys.path if p not in saved]


_chain()
