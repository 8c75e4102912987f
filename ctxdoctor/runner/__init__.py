"""``ctxdoctor run`` and the CI outputs every command shares.

``session`` runs a command against a fresh receiver and diagnoses what it exported; ``env``
decides the command's environment; ``mux`` serves both OTLP transports on one port; ``process``
owns the child (process group, signals, terminal); ``publish`` writes JUnit/JSON reports and
the GitHub Actions annotations and summary for ``analyze``, ``check`` and ``run`` alike.
"""

from ctxdoctor.render.ci import publish
from ctxdoctor.runner.session import RunOptions, run

__all__ = ["RunOptions", "publish", "run"]
