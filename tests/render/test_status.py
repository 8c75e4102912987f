"""What ``listen`` and ``run`` say while they work (``render.status``): the live figures, the
banners and the closing lines. The exact lines are pinned: scripts and CI logs read them."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ctxdoctor.render import status
from ctxdoctor.render.status import live_line, live_panel
from tests.helpers import snapshot


def test_live_panel_and_plain_line_show_the_figures() -> None:
    console = Console(record=True, width=120, force_terminal=True)
    console.print(live_panel(snapshot(), "ctxdoctor listen -> dump.json"))
    text = console.export_text()
    for word in ("spans", "traces", "requests", "connections", "suspected orphans", "1200", "40", "api"):
        assert word in text
    assert "SDK instances" in text
    line = live_line(snapshot())
    assert "spans 1200" in line and "traces 40" in line and "suspected orphans 7" in line
    assert "api (3 conn)" in line


def test_live_figures_say_what_they_cover() -> None:
    snap = snapshot(
        orphans_spans=50_000,
        observed_spans=90_000,
        orphans_age=4.0,
        traces=250_000,
        traces_estimated=True,
        backlog_bytes=300 << 20,
        write_error="cannot write dump.json: disk full",
    )
    line = live_line(snap)
    assert "suspected orphans 7 in the last 50000 spans (as of 4s ago)" in line
    assert "traces ~250000" in line
    assert "300 MiB behind" in line
    assert "NOT WRITABLE: cannot write dump.json: disk full" in line
    console = Console(record=True, width=140, force_terminal=True)
    console.print(live_panel(snap, "t"))
    assert "NOT WRITABLE" in console.export_text()
    assert live_line(snapshot(orphans=None, spans=0)).count("suspected orphans -") == 1
    assert "computing" in live_line(snapshot(orphans=None))


def test_the_live_view_says_how_to_keep_up() -> None:
    behind = live_line(snapshot(backlog_bytes=300 << 20))
    assert "JSON dump 300 MiB behind" in behind and "-o dump.pb" in behind
    assert "-o dump.pb" not in live_line(snapshot(backlog_bytes=8 << 20))  # a short lag is no news
    assert "behind" not in live_line(snapshot(backlog_bytes=0))


def test_the_listen_banner_and_hints() -> None:
    banner = status.listen_banner("127.0.0.1", 4317, 4318, 9411, "/api/v2/spans", Path("dump.json"), proto=False)
    assert banner == (
        "ctxdoctor listen: OTLP/gRPC on 127.0.0.1:4317, OTLP/HTTP on 127.0.0.1:4318 (POST /v1/traces), "
        "Zipkin on 127.0.0.1:9411 (POST /api/v2/spans), writing dump.json"
    )
    assert status.listen_banner("::1", 1, 2, None, "/x", Path("d.pb"), proto=True) == (
        "ctxdoctor listen: OTLP/gRPC on ::1:1, OTLP/HTTP on ::1:2 (POST /v1/traces), writing d.pb "
        "(Collector proto format)"
    )
    hints = status.exporter_hints("localhost", 4317, 4318, 9411, "/api/v2/spans")
    assert status.hint_lines(hints) == [
        "  Node.js (http/protobuf, the SDK default):",
        "    export OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf "
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318",
        "  Python (gRPC, the SDK default):",
        "    export OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317",
        "  apps on a Zipkin exporter:",
        "    export OTEL_TRACES_EXPORTER=zipkin OTEL_EXPORTER_ZIPKIN_ENDPOINT=http://localhost:9411/api/v2/spans",
    ]
    assert len(status.exporter_hints("localhost", 1, 2, None, "/api/v2/spans")) == 2
    assert status.stops_when(1, 5) == "Stops after 1s, after 5 spans, on Ctrl-C/SIGTERM, then prints the diagnosis."
    assert status.stops_when(None, None) == "Stops on Ctrl-C/SIGTERM, then prints the diagnosis."


def test_the_closing_lines_of_listen() -> None:
    assert status.listen_stopped("SIGINT", 3, 1, Path("dump.json"), "dump.json.receipts.jsonl") == (
        "\nStopped (SIGINT). Received 3 spans in 1 requests; wrote dump.json and dump.json.receipts.jsonl."
    )
    assert status.listen_stopped("x", 0, 0, Path("j"), None).endswith("wrote j.")
    assert status.connections_per_service({}, {}) == []
    assert status.connections_per_service({"api": 1, "worker": 3}, {"api": 1, "worker": 2}) == [
        "Exporter connections per service (each SDK instance opens its own):",
        "  api: 1 connection, 1 SDK instance (distinct resources)",
        "  worker: 3 connections, 2 SDK instances (distinct resources)",
    ]


def test_the_lines_of_run() -> None:
    assert status.run_banner("127.0.0.1", 5, 6, Path("dump.json")) == (
        "receiving OTLP/gRPC and OTLP/HTTP on 127.0.0.1:5 and Zipkin on 127.0.0.1:6; writing dump.json"
    )
    assert status.run_banner("127.0.0.1", 5, None, Path("d.pb")).endswith("on 127.0.0.1:5; writing d.pb")
    assert status.env_set("A", "1", replaced=False) == "  A=1"
    assert status.env_set("A", "1", replaced=True) == "  A=1 (replaces the value you set)"
    how = status.command_how(None, 0, [])
    assert status.command_ended(how, 1.25, 145, 3, {"grpc": 3}, Path("dump.json")) == (
        "the command exited with code 0 after 1.2s; received 145 spans in 3 requests (grpc: 3 connections); "
        "dump: dump.json"
    )
    how = status.command_how("SIGKILL", -9, ["SIGTERM", "SIGINT"])
    assert how == "was killed by SIGKILL (after ctxdoctor passed on SIGTERM, SIGINT)"
    line = status.command_ended(how, 2.0, 0, 0, {}, Path("d"))
    assert line.endswith("received 0 spans in 0 requests; dump: d")
    assert "connection" not in status.command_ended(status.command_how(None, 3, []), 0.5, 1, 1, {}, Path("d"))
    assert "1 connection)" in status.command_ended(how, 2.0, 1, 1, {"http/protobuf": 1}, Path("d"))


def test_draining_hints_at_a_proto_dump_once_asked() -> None:
    assert status.draining(300 << 20, hint=False) == "finishing the JSON dump: 300 MiB of the journal left"
    assert status.draining(300 << 20, hint=True).endswith(
        "(a proto dump, -o dump.pb, is complete the moment the load stops)"
    )
