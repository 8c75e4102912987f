"""``listen -o dump.pb``: the journal is the dump (the Collector file exporter's ``proto`` format).

Nothing is converted, so the dump is complete as soon as a request is acknowledged, whatever the
rate; the converter process only observes (traces and the live orphan count). Exercised with the
real Python SDK exporters over gRPC and OTLP/HTTP, with a signal mid-stream, and against the JSON
converter's own figures on the same journal.
"""

from __future__ import annotations

import collections
import os
import struct
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from rich.console import Console

from ctxdoctor.readers import read_paths
from ctxdoctor.receiver import read_receipts
from ctxdoctor.receiver.convert import Converter
from ctxdoctor.receiver.live import LiveState, LiveView
from ctxdoctor.receiver.receiver import Receiver, dump_format_for
from ctxdoctor.receiver.sink import DumpWriteError, journal_record
from tests.helpers import (
    APPS,
    EXPORT,
    Listen,
    check_dump,
    created_ids,
    fill_the_disk,
    grpc_call,
    http_call,
    journal_records,
    make_request,
    run_python_app,
    unreadable_record,
)


def _records_of(path: Path) -> list[ExportTraceServiceRequest]:
    """The file read as the Collector's proto format, with the reference protobuf classes."""
    data = path.read_bytes()
    out, p = [], 0
    while p < len(data):
        (n,) = struct.unpack_from(">I", data, p)
        assert p + 4 + n <= len(data), f"record at {p} runs past the end"
        out.append(ExportTraceServiceRequest.FromString(data[p + 4 : p + 4 + n]))
        p += 4 + n
    return out


@pytest.mark.parametrize(
    ("name", "flag", "expected"),
    [
        ("dump.pb", None, "proto"),
        ("dump.binpb", None, "proto"),
        ("dump.PB", None, "proto"),
        ("dump.json", None, "json"),
        ("dump", None, "json"),
        ("dump.json", "proto", "proto"),
        ("dump.pb", "json", "json"),
    ],
)
def test_the_format_comes_from_the_flag_then_the_suffix(name: str, flag: str | None, expected: str) -> None:
    assert dump_format_for(Path(name), flag) == expected


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_python_exporters_into_a_proto_dump(tmp_path: Path, protocol: str) -> None:
    listen = Listen(tmp_path / "dump.pb")
    try:
        rounds, tasks, per_task = 6, 4, 10
        run_python_app(tmp_path, listen, protocol, rounds, tasks, per_task)
        rc, out, err = listen.stop()
    finally:
        listen.kill()
    assert rc == 0, err
    created = created_ids(tmp_path / "ids.txt")
    spans = check_dump(listen.dump, created)  # every created span, once
    # The reference classes read it as the Collector's proto file format, record by record.
    records = _records_of(listen.dump)
    assert sum(len(ss.spans) for r in records for rs in r.resource_spans for ss in rs.scope_spans) == len(created)
    # Nothing else was written beside it: no journal, no JSON dump.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.pb", "dump.pb.receipts.jsonl", "ids.txt"]
    assert f"Received {len(created)} spans" in out and "wrote " + str(listen.dump) in out
    roots = collections.Counter(s.name for s in spans if s.parent_span_id == 0)
    assert roots == {"dispatch": rounds, "task": rounds * tasks}
    assert "dispatch" in out and "task" in out  # the final report names the gap
    assert sum(r.spans for r in read_receipts(tmp_path / "dump.pb.receipts.jsonl")) == len(created)
    # ... and `ctxdoctor convert` turns it into the JSON dump listen would have written.
    converted = subprocess.run(
        [sys.executable, "-m", "ctxdoctor", "convert", "dump.pb"], cwd=tmp_path, capture_output=True, text=True
    )
    assert converted.returncode == 0, converted.stderr
    assert read_paths([tmp_path / "dump.json"]).spans == spans


def test_dump_format_flag_overrides_the_suffix(tmp_path: Path) -> None:
    listen = Listen(tmp_path / "spans.bin", "--dump-format", "proto")
    try:
        req, ids = make_request(7, n=4)
        grpc_call_port(listen.grpc_port, req.SerializeToString())
        rc, out, err = listen.stop()
    finally:
        listen.kill()
    assert rc == 0, err
    assert f"writing {listen.dump} (Collector proto format)" in out and "Received 4 spans" in out
    assert [len(ss.spans) for r in _records_of(listen.dump) for rs in r.resource_spans for ss in rs.scope_spans] == [4]
    assert {(s.trace_id, s.span_id) for s in read_paths([listen.dump]).spans} == ids
    assert not (tmp_path / "spans.bin.journal").exists()


def grpc_call_port(port: int, data: bytes) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        ch.unary_unary(EXPORT)(data, timeout=10)


def test_receiver_api_proto_dump_is_complete_without_waiting(tmp_path: Path) -> None:
    out = tmp_path / "dump.pb"
    with Receiver(out, grpc_port=0, http_port=0, dump_format="proto") as rcv:
        assert rcv.journal_path == out
        req, ids = make_request(1, n=6)
        grpc_call(rcv, req.SerializeToString())
        req2, ids2 = make_request(2, n=3)
        assert http_call(rcv, req2.SerializeToString())[0] == 200
        # Acknowledged means in the dump: readable now, while the receiver runs.
        assert rcv.flush(timeout=0)
        assert rcv.dump_behind == 0
        assert {(s.trace_id, s.span_id) for s in read_paths([out]).spans} == ids | ids2
        # A second receiver cannot write the same dump.
        with pytest.raises(DumpWriteError, match="another ctxdoctor process"):
            Receiver(out, grpc_port=0, http_port=0, dump_format="proto").start()
    assert rcv.dump_complete and rcv.result_path == out
    assert {(s.trace_id, s.span_id) for s in read_paths([out]).spans} == ids | ids2


def test_a_proto_dump_cannot_have_a_separate_journal(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="its own journal"):
        Receiver(tmp_path / "d.pb", dump_format="proto", journal=tmp_path / "j")
    with pytest.raises(ValueError, match="'json' or 'proto'"):
        Receiver(tmp_path / "d.pb", dump_format="yaml")  # type: ignore[arg-type]


def test_observer_counts_what_the_converter_counts(tmp_path: Path) -> None:
    """Observing a journal (trace ids only) gives the live view the same figures as converting it."""
    journal = tmp_path / "j"
    data, ids = journal_records(range(1, 30))
    bad_at = len(data)
    data += unreadable_record(30)  # upb refuses it
    more, more_ids = journal_records(range(31, 40))
    journal.write_bytes(data + more)
    figures = []
    for dump in (tmp_path / "dump.json", None):
        conv = Converter(journal, dump, live=True)
        while conv.step(limit=journal.stat().st_size):
            pass
        conv.maybe_diagnose(force=True)
        conv.close()
        p = conv.progress
        figures.append((p.offset, p.requests, p.spans, p.traces, p.orphans, p.orphans_spans, p.error))
    assert figures[0] == figures[1]
    assert figures[1][:3] == (len(data + more), 38, len(ids | more_ids))
    assert figures[1][6] == f"journal record at offset {bad_at} is unreadable; skipped"
    assert not (tmp_path / "-").exists()


def test_observer_waits_for_a_record_still_being_written(tmp_path: Path) -> None:
    journal = tmp_path / "j"
    whole, _ = journal_records(range(1, 4))
    last = journal_record(make_request(4, n=5)[0].SerializeToString())
    journal.write_bytes(whole + last[:-3])
    conv = Converter(journal, None, live=False)
    assert conv.step() and conv.progress.offset == len(whole)
    assert not conv.step()
    with journal.open("ab") as f:
        f.write(last[-3:])
    assert conv.step() and conv.progress.spans == 20
    conv.close()


def test_a_proto_dump_is_never_behind_in_the_live_view(tmp_path: Path) -> None:
    with Receiver(tmp_path / "dump.pb", grpc_port=0, http_port=0, dump_format="proto") as rcv:
        for seed in range(1, 6):
            grpc_call(rcv, make_request(seed, n=50)[0].SerializeToString())
        snap = LiveState(rcv).snapshot()
        assert snap.spans == 250 and snap.backlog_bytes == 0
        console = Console(record=True, width=160)
        with LiveView(LiveState(rcv), console, title="t", plain_every=0) as view:
            view.tick()
        assert "behind" not in console.export_text()


def test_run_writes_a_proto_dump_when_asked_by_the_name(tmp_path: Path) -> None:
    """``ctxdoctor run -o dump.pb`` around a real Python SDK app: the proto dump holds every span."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GITHUB_", "CTX_", "CTXDOCTOR_"))}
    env.update(CTXDOCTOR_IDS=str(tmp_path / "ids.txt"), CTXDOCTOR_ROUNDS="2", CTXDOCTOR_TASKS="2")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctxdoctor",
            "run",
            "-o",
            "dump.pb",
            "--",
            sys.executable,
            str(APPS / "python_exporter.py"),
        ],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    created = created_ids(tmp_path / "ids.txt")
    check_dump(tmp_path / "dump.pb", created)
    assert _records_of(tmp_path / "dump.pb")  # the Collector's proto format, not JSON in a .pb file
    assert not (tmp_path / "dump.pb.journal").exists()


def test_a_full_disk_leaves_a_proto_dump_of_whole_records(tmp_path: Path) -> None:
    """The file size limit stands in for a full disk. The proto dump is the journal: once full,
    exporters are answered UNAVAILABLE / 503, and the dump holds exactly what was acknowledged,
    in whole records."""
    limit = 64 * 1024
    listen, accepted, out, err = fill_the_disk(tmp_path / "dump.pb", limit)
    assert "file size limit reached" in err and "is incomplete" not in err, err
    assert listen.dump.stat().st_size <= limit
    dump = read_paths([listen.dump])
    assert not dump.warnings  # the failed appends were rolled back
    assert {(s.trace_id, s.span_id) for s in dump.spans} == accepted
    assert f"wrote {listen.dump}" in out and f"Received {len(accepted)} spans in" in out, out
