"""``ctxdoctor run``: a command run against a fresh receiver, then diagnosed.

``session`` runs the command and diagnoses what it exported; ``env`` decides the command's
environment; ``mux`` serves both OTLP transports on one port; ``process`` owns the child (process
group, signals, terminal). The report files and CI annotations are ``ctxdoctor.render.ci``'s.
"""

from ctxdoctor.runner.session import RunOptions, run

__all__ = ["RunOptions", "run"]
