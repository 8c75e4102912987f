"""Fixtures shared across the test folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxdoctor.receiver import Receiver
from tests.helpers import LIMIT, Listen


@pytest.fixture
def rcv(tmp_path: Path) -> Iterator[Receiver]:
    logs: list[str] = []
    with Receiver(tmp_path / "dump.json", grpc_port=0, http_port=0, max_message_bytes=LIMIT, log=logs.append) as r:
        r.logs = logs  # type: ignore[attr-defined]
        yield r


@pytest.fixture
def listen(tmp_path: Path) -> Iterator[Listen]:
    lp = Listen(tmp_path / "dump.json")
    yield lp
    lp.kill()
