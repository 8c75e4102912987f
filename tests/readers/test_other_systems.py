"""Jaeger, Zipkin and Tempo documents: read by content, the same spans and the same diagnosis as
the OTLP recording they were made from, and clear errors for what they are not.

The documents are the recorded real-SDK fixtures rewritten in each system's shape
(``otlp_shapes``), so the OTLP dump is the ground truth; the small hand-written documents below
follow the formats' published examples and are labelled as such.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ctxdoctor.diagnose import diagnose
from ctxdoctor.errors import InputError
from ctxdoctor.findings import Report, Settings
from ctxdoctor.model import Span
from ctxdoctor.readers import read_paths
from ctxdoctor.receiver.decode import parse_json
from tests.readers.otlp_shapes import to_jaeger, to_tempo, to_zipkin

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "fixtures" / "scenarios"
NAIVE = "node-worker-threads-naive"

SHAPES = {
    "jaeger": lambda reqs: json.dumps(to_jaeger(reqs), indent=2),  # as the UI's "Trace JSON" shows it
    "zipkin": lambda reqs: json.dumps(to_zipkin(reqs)),
    "tempo": lambda reqs: json.dumps(to_tempo(reqs)),
    "tempo-v2": lambda reqs: json.dumps(to_tempo(reqs, v2=True), indent=1),
}


def _requests(scenario: str) -> list[dict[str, Any]]:
    lines = (SCENARIOS / scenario / "dump.json").read_text().splitlines()
    return [json.loads(x) for x in lines if x.strip()]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _span_key(s: Span) -> tuple[Any, ...]:
    u = s.unit
    unit = (u.service, u.host, u.pid, u.instance_id, u.thread_id, u.thread_name, u.thread_type, u.language)
    return (
        s.trace_id,
        s.span_id,
        s.parent_span_id,
        s.name,
        s.kind,
        s.start // 1000,
        s.end // 1000,
        s.status,
        s.links,
        unit,
    )


def _verdict(report: Report) -> tuple[Any, ...]:
    gaps = tuple((g.service, g.parent_name, g.orphan_name, g.boundary, g.occurrences, g.fix.title) for g in report.gaps)
    sm = report.summary
    return gaps, (sm.spans, sm.traces, sm.roots, sm.suspected_orphans, sm.missing_parents, sm.lost_parents)


def _diagnose(paths: list[Path]) -> Report:
    dump = read_paths(paths)
    return diagnose(dump.spans, Settings(), warnings=[str(w) for w in dump.warnings])


def _cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctxdoctor", *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd
    )


# -- the same spans and the same diagnosis as the OTLP recording ----------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "scenario",
    [NAIVE, "node-worker-threads-propagated", "python-threadpool-naive", "python-threadpool-copied"],
)
def test_each_shape_gives_the_otlp_spans_and_verdict(tmp_path: Path, shape: str, scenario: str) -> None:
    otlp = SCENARIOS / scenario / "dump.json"
    other = _write(tmp_path, "trace.json", SHAPES[shape](_requests(scenario)))
    theirs = read_paths([other])
    ours = read_paths([otlp])
    assert theirs.warnings == []
    # Same ids, parents, names, kinds, resources (units) and times, at the microseconds the
    # other systems keep.
    assert sorted(map(_span_key, theirs.spans)) == sorted(map(_span_key, ours.spans))
    assert all(s.start % 1000 == 0 and s.end % 1000 == 0 for s in theirs.spans)
    # Node.js starts whole milliseconds and Python at any microsecond: the clock resolution the
    # diagnosis infers is the same in both, so every gap (or none) is found alike.
    verdict = _verdict(_diagnose([other]))
    assert verdict == _verdict(_diagnose([otlp]))
    if scenario.endswith("naive"):
        assert verdict[0], "the naive app must show its gap"
    else:
        assert verdict[0] == ()


@pytest.mark.parametrize("shape", SHAPES)
def test_naive_worker_threads_report_names_the_gap_parent_and_fix(tmp_path: Path, shape: str) -> None:
    """The CLI on each shape: same gap, dispatching span and fix as on the OTLP dump."""
    other = _write(tmp_path, f"{shape}.json", SHAPES[shape](_requests(NAIVE)))
    proc = _cli("analyze", "-f", "json", other)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    base = json.loads(_cli("analyze", "-f", "json", SCENARIOS / NAIVE / "dump.json").stdout)
    assert [g["parent_name"] for g in report["gaps"]] == ["process_data"]
    assert [(g["parent_name"], g["orphan_name"], g["boundary"], g["fix"]) for g in report["gaps"]] == [
        (g["parent_name"], g["orphan_name"], g["boundary"], g["fix"]) for g in base["gaps"]
    ]


def test_orphans_and_parents_in_separate_files(tmp_path: Path) -> None:
    """One file per trace, as when each trace is downloaded on its own: the orphan and its
    parent are always in different traces, so only reading them together finds the gap."""
    doc = to_jaeger(_requests(NAIVE))
    paths = []
    for i, trace in enumerate(doc["data"]):
        paths.append(_write(tmp_path, f"trace-{i}.json", json.dumps({"data": [trace]})))
    assert len(paths) == 48
    assert _verdict(_diagnose(paths)) == _verdict(_diagnose([SCENARIOS / NAIVE / "dump.json"]))
    assert _diagnose(paths[:1]).gaps == ()


@pytest.mark.parametrize("shape", ["jaeger", "zipkin", "tempo"])
def test_several_documents_in_one_file(tmp_path: Path, shape: str) -> None:
    """JSON lines of answers, and pretty-printed answers back to back, read as one dump."""
    reqs = _requests(NAIVE)
    half = len(reqs) // 2
    make = {"jaeger": to_jaeger, "zipkin": to_zipkin, "tempo": to_tempo}[shape]
    lines = _write(tmp_path, "lines.json", json.dumps(make(reqs[:half])) + "\n" + json.dumps(make(reqs[half:])) + "\n")
    pretty = _write(
        tmp_path, "pretty.json", json.dumps(make(reqs[:half]), indent=2) + json.dumps(make(reqs[half:]), indent=2)
    )
    expected = sorted(map(_span_key, read_paths([SCENARIOS / NAIVE / "dump.json"]).spans))
    assert sorted(map(_span_key, read_paths([lines]).spans)) == expected
    assert sorted(map(_span_key, read_paths([pretty]).spans)) == expected


def test_zipkin_traces_answer_is_an_array_of_traces(tmp_path: Path) -> None:
    """``GET /api/v2/traces`` answers ``[[span, ...], [span, ...]]``."""
    spans = to_zipkin(_requests(NAIVE))
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_trace.setdefault(s["traceId"], []).append(s)
    path = _write(tmp_path, "traces.json", json.dumps(list(by_trace.values())))
    assert sorted(map(_span_key, read_paths([path]).spans)) == sorted(
        map(_span_key, read_paths([SCENARIOS / NAIVE / "dump.json"]).spans)
    )


def test_detection_is_by_content_not_name(tmp_path: Path) -> None:
    reqs = _requests(NAIVE)
    for name, text in (("trace.pb", SHAPES["jaeger"](reqs)), ("dump.json.gz.txt", SHAPES["zipkin"](reqs))):
        assert len(read_paths([_write(tmp_path, name, text)]).spans) == 168


# -- published examples (hand-written after the formats' documentation and test data) -------------
# Jaeger v1 writes a 64-bit trace id without leading zeros, and a span may carry its process
# inline; FOLLOWS_FROM is a link; the UI's older shape names a parent in parentSpanID.
_JAEGER_EXAMPLE = {
    "data": [
        {
            "traceID": "6f3a1c2b9d",
            "spans": [
                {
                    "traceID": "6f3a1c2b9d",
                    "spanID": "a1",
                    "operationName": "HTTP GET /thumbs",
                    "references": [],
                    "startTime": 1700000000123456,
                    "duration": 5000,
                    "tags": [
                        {"key": "span.kind", "type": "string", "value": "server"},
                        {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                        {"key": "thread.id", "type": "int64", "value": 7},
                    ],
                    "logs": [],
                    "processID": "p1",
                    "warnings": None,
                },
                {
                    "traceID": "6f3a1c2b9d",
                    "spanID": "b2",
                    "operationName": "resize",
                    "references": [
                        {"refType": "CHILD_OF", "traceID": "6f3a1c2b9d", "spanID": "a1"},
                        {"refType": "FOLLOWS_FROM", "traceID": "00000000000000ff", "spanID": "c3"},
                    ],
                    "startTime": 1700000000124000,
                    "duration": 1000,
                    "tags": [],
                    "process": {
                        "serviceName": "resizer",
                        "tags": [{"key": "process.pid", "type": "int64", "value": 42}],
                    },
                },
                {
                    "traceID": "6f3a1c2b9d",
                    "spanID": "d4",
                    "parentSpanID": "b2",
                    "operationName": "encode",
                    "startTime": 1700000000124100,
                    "duration": 10,
                    "processID": "p1",
                },
            ],
            "processes": {
                "p1": {
                    "serviceName": "thumbnailer",
                    "tags": [
                        {"key": "host.name", "type": "string", "value": "vm"},
                        {"key": "process.pid", "type": "int64", "value": 41},
                        {"key": "telemetry.sdk.language", "type": "string", "value": "nodejs"},
                    ],
                }
            },
        }
    ],
    "total": 0,
    "limit": 0,
    "offset": 0,
    "errors": None,
}


def test_jaeger_published_shape(tmp_path: Path) -> None:
    spans = {s.name: s for s in read_paths([_write(tmp_path, "j.json", json.dumps(_JAEGER_EXAMPLE))]).spans}
    root, child, grandchild = spans["HTTP GET /thumbs"], spans["resize"], spans["encode"]
    assert root.trace_id == child.trace_id == 0x6F3A1C2B9D
    assert (root.span_id, root.parent_span_id, child.parent_span_id, grandchild.parent_span_id) == (0xA1, 0, 0xA1, 0xB2)
    assert child.links == (0xFF,)
    assert (root.kind, root.status, child.kind) == (2, 2, 0)
    assert (root.start, root.end) == (1700000000123456000, 1700000000128456000)
    assert (root.unit.service, root.unit.pid, root.unit.host, root.unit.language, root.unit.thread_id) == (
        "thumbnailer",
        41,
        "vm",
        "nodejs",
        7,
    )
    assert (child.unit.service, child.unit.pid) == ("resizer", 42)
    assert grandchild.unit.resource == root.unit.resource


# Tempo writes OTLP in protobuf's JSON mapping: base64 ids, enum names, int64 as strings; older
# versions say instrumentationLibrarySpans.
_TRACE = bytes.fromhex("31491957fb0bec05347b48efe8ecc1b0")
_SPAN, _PARENT = bytes.fromhex("4b23de25d1fb6641"), bytes.fromhex("3ef58fd67f3c3c44")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


_TEMPO_EXAMPLE = {
    "batches": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "tempo-vulture"}}]},
            "instrumentationLibrarySpans": [
                {
                    "instrumentationLibrary": {},
                    "spans": [
                        {
                            "traceId": _b64(_TRACE),
                            "spanId": _b64(_SPAN),
                            "parentSpanId": _b64(_PARENT),
                            "name": "vulture-45",
                            "kind": "SPAN_KIND_CLIENT",
                            "startTimeUnixNano": "1636729665000000000",
                            "endTimeUnixNano": "1636729665000054000",
                            "status": {"code": "STATUS_CODE_ERROR"},
                        }
                    ],
                }
            ],
        }
    ]
}


def test_tempo_published_shape_with_base64_ids(tmp_path: Path) -> None:
    (span,) = read_paths([_write(tmp_path, "t.json", json.dumps(_TEMPO_EXAMPLE))]).spans
    assert (span.trace_id, span.span_id, span.parent_span_id) == (
        int.from_bytes(_TRACE, "big"),
        int.from_bytes(_SPAN, "big"),
        int.from_bytes(_PARENT, "big"),
    )
    assert (span.kind, span.status, span.unit.service, span.end - span.start) == (3, 2, "tempo-vulture", 54000)


def test_base64_ids_in_a_collector_file_keep_their_explanation(tmp_path: Path) -> None:
    """``{"resourceSpans": ...}`` is OTLP/JSON, whose ids are hex: base64 there is a mistake."""
    collector = {"resourceSpans": _TEMPO_EXAMPLE["batches"]}
    path = _write(tmp_path, "c.json", json.dumps(collector))
    with pytest.raises(InputError, match="OTLP/JSON ids are hex, not base64"):
        read_paths([path])


# -- what is not a trace, or holds none ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "looks"),
    [
        ('{"status": "ok", "services": ["a"]}', "a JSON object whose first key is 'status'"),
        ('["not", "spans"]', "not Zipkin v2 JSON: [0]: expected a Zipkin span object"),
        ("hello world\n", "text starting 'hello world"),
    ],
)
def test_not_a_trace_dump_names_what_it_looks_like(tmp_path: Path, text: str, looks: str) -> None:
    proc = _cli("analyze", _write(tmp_path, "x.json", text))
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "x.json" in lines[0] and looks in lines[0]


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ('{"data": [], "total": 0, "limit": 0, "offset": 0, "errors": null}', "Jaeger JSON"),
        ("[]", "Zipkin v2 JSON"),
        ('{"batches": []}', "Grafana Tempo JSON"),
        ('{"trace": {}}', "Grafana Tempo JSON"),
    ],
)
def test_valid_but_empty_says_so_and_fails_the_gate(tmp_path: Path, text: str, title: str) -> None:
    _write(tmp_path, "empty.json", text)
    proc = _cli("check", "--max-orphan-ratio", "0.5", "empty.json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    out = " ".join((proc.stdout + proc.stderr).split())
    assert f"empty.json: {title} with no spans in it" in out
    assert "no spans to judge" in out


def test_jaeger_error_answer_is_an_error_not_an_empty_dump(tmp_path: Path) -> None:
    text = '{"data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": 404, "msg": "trace not found"}]}'
    _write(tmp_path, "j.json", text)
    proc = _cli("analyze", "j.json", cwd=tmp_path)
    assert proc.returncode == 3
    assert "j.json:1: Jaeger JSON that holds an error answer, not traces: trace not found (404)" in proc.stderr


# -- malformed input: one line naming the file, the position and what was expected, exit 3 --------
def _jaeger_with(**span_fields: Any) -> str:
    doc = json.loads(json.dumps(_JAEGER_EXAMPLE))
    doc["data"][0]["spans"][0].update(span_fields)
    return json.dumps(doc, indent=2)


def _tempo_with(**span_fields: Any) -> str:
    doc = json.loads(json.dumps(_TEMPO_EXAMPLE))
    doc["batches"][0]["instrumentationLibrarySpans"][0]["spans"][0].update(span_fields)
    return json.dumps(doc)


_TRUNCATED = json.dumps(_JAEGER_EXAMPLE, indent=1)[:-40]
_ZIPKIN_SPAN = {"traceId": "6f3a1c2b9d", "id": "a1", "name": "x", "timestamp": 1700000000123456, "duration": 10}


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        (
            _jaeger_with(startTime="2023-11-14T22:13:20Z"),
            "1: not Jaeger JSON: data[0].spans[0].startTime",
            "microseconds",
        ),
        (_jaeger_with(spanID="not-hex"), "1: not Jaeger JSON: data[0].spans[0].spanID", "16 hex digits"),
        (_jaeger_with(processID="p9"), "1: not Jaeger JSON: data[0].spans[0].processID", "processes"),
        (_TRUNCATED, f"{len(_TRUNCATED.splitlines())}: malformed JSON", "truncated"),  # the line it ends on
        (
            json.dumps([_ZIPKIN_SPAN]) + "\n" + json.dumps([dict(_ZIPKIN_SPAN, id="zz")]),
            "2: not Zipkin v2 JSON: [0].id",
            "hex",
        ),
        (json.dumps([dict(_ZIPKIN_SPAN, kind="SIDEWAYS")]), "1: not Zipkin v2 JSON: [0].kind", "CLIENT, SERVER"),
        (json.dumps([{k: v for k, v in _ZIPKIN_SPAN.items() if k != "timestamp"}]), "[0].timestamp", "microseconds"),
        (json.dumps([dict(_ZIPKIN_SPAN, tags={"n": 1})]), "[0].tags.n", "a string"),
        (
            _tempo_with(spanId="AAAA"),
            "batches[0].instrumentationLibrarySpans[0].spans[0].spanId",
            "8-byte id in base64",
        ),
        (_tempo_with(kind="SPAN_KIND_NOPE"), "1:", "not a known enum name"),
    ],
)
def test_malformed_input_is_one_line_with_position_and_expectation(
    tmp_path: Path, text: str, where: str, expected: str
) -> None:
    _write(tmp_path, "bad.json", text)
    proc = _cli("analyze", "bad.json", cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: bad.json:"), lines[0]
    assert where in lines[0] and expected in lines[0], lines[0]


# -- convert ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_convert_writes_otlp_json_lines_the_collector_reads(tmp_path: Path, shape: str) -> None:
    source = _write(tmp_path, "in.json", SHAPES[shape](_requests(NAIVE)))
    proc = _cli("convert", source, "-o", tmp_path / "out.json")
    assert proc.returncode == 0, proc.stderr
    assert "(168 spans)" in proc.stderr
    out = tmp_path / "out.json"
    for line in out.read_bytes().splitlines():
        req, rejected, _ = parse_json(line)  # the receiver's strict protobuf mapping of OTLP/JSON
        assert rejected == 0 and req.resource_spans
    assert sorted(map(_span_key, read_paths([out]).spans)) == sorted(map(_span_key, read_paths([source]).spans))


def test_convert_refuses_otlp_json(tmp_path: Path) -> None:
    proc = _cli("convert", SCENARIOS / NAIVE / "dump.json", "-o", tmp_path / "out.json")
    assert proc.returncode == 3 and "already OTLP/JSON" in proc.stderr
    assert not (tmp_path / "out.json").exists()


def test_errors_never_quote_attribute_values(tmp_path: Path) -> None:
    secret = "sk-live-0123456789"
    bad_tag = {"key": "api.key", "type": "int64", "value": secret}
    jaeger = json.loads(json.dumps(_JAEGER_EXAMPLE))
    jaeger["data"][0]["spans"][0]["tags"].append(bad_tag)
    zipkin = [dict(_ZIPKIN_SPAN, tags={"api.key": {"value": secret}})]
    for name, doc in (("j.json", jaeger), ("z.json", zipkin)):
        _write(tmp_path, name, json.dumps(doc))
        proc = _cli("analyze", name, cwd=tmp_path)
        assert proc.returncode == 3
        assert secret not in proc.stderr and "got a" in proc.stderr, proc.stderr
