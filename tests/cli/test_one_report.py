"""Every command computes its report through the one pipeline: the same dump with the same settings
gives byte-identical JSON whether it came from ``analyze``, ``check``, ``listen`` or ``run``.

The dumps ``listen`` and ``run`` analyse are the ones they wrote while receiving a recorded
real-SDK dump, sent to them over OTLP/HTTP exactly as it was recorded; ``analyze`` is then run
on those same files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.helpers import SCENARIOS, Listen

RECORDED = SCENARIOS / "node-worker-threads-naive" / "dump.json"
TIMEOUT = 120

#: The command ``run`` wraps: posts each recorded line to the endpoint ``run`` hands it.
_SEND = """
import os, sys, urllib.request
endpoint = os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
for line in open(sys.argv[1], "rb"):
    if line.strip():
        req = urllib.request.Request(endpoint, data=line, headers={"Content-Type": "application/json"})
        assert urllib.request.urlopen(req, timeout=30).status == 200
"""


def _ctxdoctor(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GITHUB_"))}
    return subprocess.run(
        [sys.executable, "-m", "ctxdoctor", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def _post_all(url: str, dump: Path) -> None:
    for line in dump.read_bytes().splitlines():
        if line.strip():
            req = urllib.request.Request(url, data=line, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.status == 200


def _analyze_json(cwd: Path, dump: Path, config: Path) -> bytes:
    out = cwd / f"analyze-{dump.stem}.json"
    run = _ctxdoctor(cwd, "analyze", str(dump), "--config", str(config), "-f", "json", "-o", str(out))
    assert run.returncode in (0, 1), run.stderr
    return out.read_bytes()


def test_every_command_gives_the_same_json_report(tmp_path: Path) -> None:
    config = tmp_path / "ctxdoctor.toml"
    config.write_text("max-orphan-ratio = 0.05\nmin-confidence = 0.4\n")

    # analyze and check on the recorded dump: the report, and the same report again as a report file.
    reference = _analyze_json(tmp_path, RECORDED, config)
    doc = json.loads(reference)
    assert doc["gaps"] and doc["settings"]["min_confidence"] == 0.4 and doc["gate"]["failed"] is True
    check_out, check_file = tmp_path / "check.json", tmp_path / "check-report.json"
    check = _ctxdoctor(
        tmp_path,
        "check",
        str(RECORDED),
        "--config",
        str(config),
        "-f",
        "json",
        "-o",
        str(check_out),
        "--report-json",
        str(check_file),
    )
    assert check.returncode == 1, check.stderr
    assert check_out.read_bytes() == reference
    assert check_file.read_bytes() == reference

    # listen: receives the recorded dump, writes its own, and reports on it.
    listened, listen_report = tmp_path / "listened.json", tmp_path / "listen-report.json"
    listen = Listen(listened, "--config", str(config), "--report-json", str(listen_report), cwd=tmp_path)
    try:
        _post_all(f"{listen.http_endpoint}/v1/traces", RECORDED)
        rc, _, err = listen.stop()
    finally:
        listen.kill()
    assert rc == 0, err
    assert listen_report.read_bytes() == _analyze_json(tmp_path, listened, config)

    # run: the command sends the recorded dump; run adds its own "run" section to the JSON report.
    ran, run_report = tmp_path / "ran.json", tmp_path / "run-report.json"
    sent = _ctxdoctor(
        tmp_path,
        "run",
        "--config",
        str(config),
        "-o",
        str(ran),
        "--report-json",
        str(run_report),
        "--",
        sys.executable,
        "-c",
        _SEND,
        str(RECORDED),
    )
    assert sent.returncode == 1, sent.stderr  # the gate fails on this dump
    run_doc = json.loads(run_report.read_bytes())
    assert run_doc.pop("run")["spans_received"] == doc["summary"]["spans"]
    # run's probe adds what it saw in the command (analyze has nothing to observe: null); the
    # sender hands no work to another thread, so every finding stays as analyze reports it.
    assert run_doc["observation"]["dispatches"] == 0
    run_doc["observation"] = None
    assert (json.dumps(run_doc, indent=2) + "\n").encode() == _analyze_json(tmp_path, ran, config)

    # And the received dumps hold what was recorded: the findings match the recorded dump's.
    for received in (listened, ran):
        again = json.loads(_analyze_json(tmp_path, received, config))
        assert again.pop("files") == [str(received)]
        assert again == {k: v for k, v in doc.items() if k != "files"}
