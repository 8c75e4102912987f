"""``ctxdoctor run --port P`` with P taken by another program: a clear failure that names the
port, and the dump a previous run left stays as it was."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from ctxdoctor.exitcodes import ExitCode
from tests.helpers import SCENARIOS


def test_a_busy_port_fails_clearly_and_keeps_the_previous_dump(tmp_path: Path) -> None:
    previous = (SCENARIOS / "python-threadpool-naive" / "dump.json").read_bytes()
    dump = tmp_path / "dump.json"
    dump.write_bytes(previous)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "ctxdoctor", "run", "--port", str(port), "--output", str(dump), "--", "true"],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr and "in use" in proc.stderr
    assert dump.read_bytes() == previous
    # Nothing else of a run was left behind either: no journal, no probe facts.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.json"]
