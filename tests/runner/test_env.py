"""The environment policy of ``ctxdoctor run`` (ctxdoctor/runner/env.py), variable by variable.

What each SDK then does with these values is checked with the real exporters in
tests/runner/test_run_e2e.py; here the policy itself is pinned so a change to it is deliberate.
"""

from __future__ import annotations

import pytest

from ctxdoctor.runner.env import child_env

P = 45678


def test_unset_protocol_gets_the_http_form_that_grpc_exporters_also_accept() -> None:
    plan = child_env({"PATH": "/bin"}, "127.0.0.1", P)
    assert plan.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == f"http://127.0.0.1:{P}/v1/traces"
    assert plan.env["OTEL_EXPORTER_OTLP_TRACES_INSECURE"] == "true"
    assert plan.env["CTXDOCTOR_OTLP_ENDPOINT"] == f"http://127.0.0.1:{P}"
    assert plan.env["PATH"] == "/bin"
    assert set(plan.set) == {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_INSECURE"}
    assert plan.replaced == []
    # Metrics and logs keep their destination: the base endpoint is never set.
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in plan.env


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, f"http://127.0.0.1:{P}"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, f"http://127.0.0.1:{P}/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, f"http://127.0.0.1:{P}/v1/traces"),
        # The per-signal protocol wins, as in the SDKs.
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": " GRPC "},
            f"http://127.0.0.1:{P}",
        ),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, f"http://127.0.0.1:{P}"),
    ],
)
def test_endpoint_form_follows_the_chosen_protocol(env: dict[str, str], endpoint: str) -> None:
    plan = child_env(env, "127.0.0.1", P)
    assert plan.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == endpoint
    # The protocol variables themselves are the user's and stay as they were.
    for name, value in env.items():
        assert plan.env[name] == value


def test_user_settings_pass_through_untouched() -> None:
    user = {
        "TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "TRACESTATE": "vendor=x",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer s3cret",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_BSP_SCHEDULE_DELAY": "5000",
        "OTEL_SERVICE_NAME": "checkout",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_PROPAGATORS": "tracecontext,baggage",
    }
    plan = child_env(user, "127.0.0.1", P)
    for name, value in user.items():
        assert plan.env[name] == value
    assert "OTEL_BSP_SCHEDULE_DELAY" not in plan.set  # the batch delay is never shortened


def test_user_endpoint_for_traces_is_replaced_and_reported_by_name_only() -> None:
    user = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://user:token@collector.example/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "false",
    }
    plan = child_env(user, "127.0.0.1", P)
    assert plan.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == f"http://127.0.0.1:{P}/v1/traces"
    assert plan.env["OTEL_EXPORTER_OTLP_TRACES_INSECURE"] == "true"
    assert plan.replaced == ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_INSECURE"]
    assert "token" not in " ".join(plan.notes) + repr(plan.set)


def test_keep_endpoint_sets_nothing_but_the_hint() -> None:
    user = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://localhost:4318/v1/traces"}
    plan = child_env(user, "127.0.0.1", P, keep_endpoint=True)
    assert plan.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://localhost:4318/v1/traces"
    assert "OTEL_EXPORTER_OTLP_TRACES_INSECURE" not in plan.env
    assert plan.set == {} and plan.env["CTXDOCTOR_OTLP_ENDPOINT"] == f"http://127.0.0.1:{P}"
    assert any("--keep-endpoint" in n for n in plan.notes)


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, True),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, False),
        ({"OTEL_SDK_DISABLED": "true"}, True),
        ({}, False),
    ],
)
def test_settings_that_stop_exports_are_warned_about_not_changed(env: dict[str, str], warned: bool) -> None:
    plan = child_env(env, "127.0.0.1", P)
    assert bool(plan.notes) is warned
    for name, value in env.items():
        assert plan.env[name] == value
