"""A receiver that cannot start destroys nothing, and an earlier dump is replaced only when asked:
``ctxdoctor listen`` as a real process, real ports, real files."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ctxdoctor.readers import read_paths
from ctxdoctor.receiver import Receiver
from ctxdoctor.receiver.sink import OutputExists
from tests.apps.listen import Listen
from tests.scenarios import SCENARIOS

EARLIER = (SCENARIOS / "node-worker-threads-naive" / "dump.json").read_bytes()
RECEIPTS = b'{"time":1.0,"protocol":"grpc","peer":"127.0.0.1:1","compression":null,"bytes":10,"spans":2}\n'


def earlier_run(tmp_path: Path) -> Path:
    """Yesterday's dump and receipts, as a finished listen left them."""
    dump = tmp_path / "dump.json"
    dump.write_bytes(EARLIER)
    (tmp_path / "dump.json.receipts.jsonl").write_bytes(RECEIPTS)
    return dump


def assert_untouched(dump: Path) -> None:
    assert dump.read_bytes() == EARLIER
    assert dump.with_name("dump.json.receipts.jsonl").read_bytes() == RECEIPTS
    assert not dump.with_name("dump.json.journal").exists()


@pytest.mark.parametrize("flag", ["--port", "--http-port"])
def test_busy_port_leaves_the_earlier_dump_as_it_was(tmp_path: Path, flag: str) -> None:
    dump = earlier_run(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        other = "--http-port" if flag == "--port" else "--port"
        ports = (flag, str(busy.getsockname()[1]), other, "0")
        rc, _, err = Listen(dump, "--force", ports=ports, wait=False).wait(60)
    assert rc == 2, err
    assert "already in use" in err and "Traceback" not in err
    assert_untouched(dump)


def test_journal_that_cannot_be_created_leaves_the_earlier_dump(tmp_path: Path) -> None:
    dump = earlier_run(tmp_path)
    (tmp_path / "dump.json.journal").mkdir()  # the journal cannot be created there
    rc, _, err = Listen(dump, "--force", wait=False).wait(60)
    assert rc == 2, err
    assert "dump.json.journal" in err and "Traceback" not in err
    assert dump.read_bytes() == EARLIER
    assert (tmp_path / "dump.json.receipts.jsonl").read_bytes() == RECEIPTS


def test_an_existing_dump_is_refused_without_force(tmp_path: Path) -> None:
    dump = earlier_run(tmp_path)
    rc, _, err = Listen(dump, wait=False).wait(60)
    assert rc == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and str(dump) in lines[0] and "--force" in lines[0], err
    assert_untouched(dump)


def test_force_replaces_it(tmp_path: Path) -> None:
    dump = earlier_run(tmp_path)
    listen = Listen(dump, "--force")
    rc, out, err = listen.stop()
    assert rc == 0, err
    assert dump.read_bytes() == b""
    assert (tmp_path / "dump.json.receipts.jsonl").read_bytes() == b""
    assert "No spans arrived" in out


def test_an_empty_file_is_no_earlier_dump(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    dump.touch()
    rc, _, err = Listen(dump).stop()
    assert rc == 0, err


def test_receiver_refuses_and_cleans_up_only_what_it_created(tmp_path: Path) -> None:
    dump = tmp_path / "dump.pb"
    dump.write_bytes(b"\x00\x00\x00\x02\x0a\x00")  # an earlier proto dump: one empty request
    with pytest.raises(OutputExists, match=r"dump\.pb already exists"):
        Receiver(dump, grpc_port=0, http_port=0, dump_format="proto", overwrite=False).start()
    assert dump.read_bytes() == b"\x00\x00\x00\x02\x0a\x00"
    assert not (tmp_path / "dump.pb.receipts.jsonl").exists()
    assert read_paths([dump]).spans == []
