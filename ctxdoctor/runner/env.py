"""The environment ``ctxdoctor run`` gives the command: which variables it sets, and when.

The policy, in full (README "ctxdoctor run" repeats it):

* ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set to the run's own receiver. Its form follows the
  traces protocol the user chose, read from ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` and then
  ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``grpc`` gets ``http://127.0.0.1:PORT``; ``http/protobuf``,
  ``http/json`` or no protocol at all get ``http://127.0.0.1:PORT/v1/traces``. The per-signal
  variable is used as-is by HTTP exporters, while gRPC exporters (Python's default when the
  protocol is unset) keep only host and port. The port speaks both transports (see ``mux``), so
  an exporter chosen in code rather than by variable is caught too.
* ``OTEL_EXPORTER_OTLP_TRACES_INSECURE=true``: the receiver is plaintext on loopback. Without it,
  a user's ``OTEL_EXPORTER_OTLP_INSECURE=false`` makes Python's gRPC exporter start TLS against
  it and every export fails.
* Both are set even if the user set them: sending traces elsewhere would make the run
  meaningless. A notice on stderr names each variable replaced (never its old value, which may
  carry credentials). ``--keep-endpoint`` sets neither, for apps wired up some other way.
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the base for metrics and logs too) is *not* touched, so
  metrics and logs keep going where they went; only traces are redirected.
* Everything else is passed through unchanged: ``TRACEPARENT``/``TRACESTATE``, protocol,
  headers, compression, timeouts, certificates, ``OTEL_TRACES_EXPORTER``, ``OTEL_BSP_*``
  (the batch delay is *not* shortened: the run should lose spans exactly where production
  does, which is what a missing-parent diagnosis is about), samplers, resource attributes.
* ``CTXDOCTOR_OTLP_ENDPOINT=http://127.0.0.1:PORT`` is always added, for scripts and for
  ``--keep-endpoint`` set-ups that route the exporter themselves.
* ``OTEL_EXPORTER_ZIPKIN_ENDPOINT`` is set to the run's Zipkin port (``/api/v2/spans``), by the
  same rules as the traces endpoint, so that an app exporting with ``OTEL_TRACES_EXPORTER=zipkin``
  is received too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
TRACES_INSECURE = "OTEL_EXPORTER_OTLP_TRACES_INSECURE"
TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
BASE_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OWN_ENDPOINT = "CTXDOCTOR_OTLP_ENDPOINT"
ZIPKIN_ENDPOINT = "OTEL_EXPORTER_ZIPKIN_ENDPOINT"
ZIPKIN_PATH = "/api/v2/spans"
TRACES_PATH = "/v1/traces"


@dataclass
class EnvPlan:
    """The child's environment and what was done to get it, for the banner and the report."""

    env: dict[str, str]
    set: dict[str, str] = field(default_factory=dict)  # variables ctxdoctor set (values are its own)
    replaced: list[str] = field(default_factory=list)  # of those, the ones the user had set
    protocol: str | None = None  # the traces protocol the user chose, if any
    notes: list[str] = field(default_factory=list)


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def traces_protocol(env: Mapping[str, str]) -> str | None:
    """The traces protocol the user chose, the way the SDKs read it (per-signal first)."""
    value = _get(env, TRACES_PROTOCOL) or _get(env, PROTOCOL)
    return value.lower() if value else None


def child_env(
    parent: Mapping[str, str], host: str, port: int, *, keep_endpoint: bool = False, zipkin_port: int | None = None
) -> EnvPlan:
    """The environment for the command: ``parent`` plus the receiver's endpoint, per the policy above."""
    env = dict(parent)
    base = f"http://{host}:{port}"
    plan = EnvPlan(env=env, protocol=traces_protocol(parent))
    env[OWN_ENDPOINT] = base
    if not keep_endpoint:
        endpoint = base if plan.protocol == "grpc" else base + TRACES_PATH
        redirect = [(TRACES_ENDPOINT, endpoint), (TRACES_INSECURE, "true")]
        if zipkin_port:
            redirect.append((ZIPKIN_ENDPOINT, f"http://{host}:{zipkin_port}{ZIPKIN_PATH}"))
        for name, value in redirect:
            if name in parent and parent[name] != value:
                plan.replaced.append(name)
            env[name] = value
            plan.set[name] = value
    else:
        plan.notes.append(
            f"--keep-endpoint: the command's exporter settings are left alone; it must send traces to {base} "
            f"(also in ${OWN_ENDPOINT})"
        )
    exporters = _get(parent, "OTEL_TRACES_EXPORTER")
    chosen = [e.strip().lower() for e in exporters.split(",")] if exporters is not None else []
    if exporters is not None and "otlp" not in chosen and not (zipkin_port and "zipkin" in chosen):
        plan.notes.append(
            "OTEL_TRACES_EXPORTER does not include 'otlp', so SDKs configured from the environment "
            "will not send spans here"
        )
    if (_get(parent, "OTEL_SDK_DISABLED") or "").lower() == "true":
        plan.notes.append("OTEL_SDK_DISABLED=true: SDKs configured from the environment will create no spans")
    if plan.protocol not in (None, "grpc", "http/protobuf", "http/json"):
        plan.notes.append(f"unknown traces protocol {plan.protocol!r}; the endpoint is set in its HTTP form")
    return plan
