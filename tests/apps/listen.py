"""Run ``ctxdoctor listen`` as a real process for the receiver's end-to-end tests.

It binds free ports (``--port 0 --http-port 0 --zipkin-port 0``) and the test reads the bound
ones from the banner, so tests never race for fixed ports.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

_BANNER = re.compile(r"OTLP/gRPC on \S+?:(\d+), OTLP/HTTP on \S+?:(\d+)")
_ZIPKIN = re.compile(r"Zipkin on \S+?:(\d+)")


class Listen:
    def __init__(
        self,
        dump: Path,
        *args: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        ports: Sequence[str] = ("--port", "0", "--http-port", "0", "--zipkin-port", "0"),
        wait: bool = True,
    ) -> None:
        self.dump = dump
        cmd = [sys.executable, "-m", "ctxdoctor", "listen", *ports, "--output", str(dump), *args]
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.setdefault("COLUMNS", "200")
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            preexec_fn=preexec_fn,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err, False), daemon=True),
        ]
        for t in self._readers:
            t.start()
        self.grpc_port = self.http_port = self.zipkin_port = 0
        if wait:
            self._wait_banner()

    def _read(self, stream, sink: list[str], announce: bool) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            sink.append(line)
            if announce:
                self._lines.put(line)
        if announce:
            self._lines.put(None)

    def _wait_banner(self, timeout: float = 30.0) -> None:
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(
                    f"no banner from ctxdoctor listen; stderr: {''.join(self.err)}"
                ) from None
            if line is None:
                self.proc.wait(10)
                raise AssertionError(
                    f"ctxdoctor listen exited ({self.proc.returncode}) before listening: {''.join(self.err)}"
                )
            m = _BANNER.search(line)
            if m:
                self.grpc_port, self.http_port = int(m.group(1)), int(m.group(2))
                z = _ZIPKIN.search(line)
                self.zipkin_port = int(z.group(1)) if z else 0
                return

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def zipkin_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.zipkin_port}/api/v2/spans"

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> tuple[int, str, str]:
        """Signal it (unless it already exited) and return (exit code, stdout, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 60.0) -> tuple[int, str, str]:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        for t in self._readers:
            t.join(5)
        return rc, "".join(self.out), "".join(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
