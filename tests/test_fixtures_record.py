"""``fixtures/record.py``: recording a real Python app end to end, and refusing bad recordings.

Every fixture the tests and benchmarks rely on comes out of this recorder, so it is tested the
way it is used: the real app, the real SDK exporting over real OTLP to ctxdoctor's receiver. The
dump is re-read here with nothing but ``json`` so that a reader bug cannot hide a recorder bug.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ctxdoctor.readers import read_paths
from tests.scenarios import load_recorder

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "fixtures" / "record.py"
SCENARIOS = ROOT / "fixtures" / "scenarios"
SCENARIO = "python-threadpool-naive"


recorder = load_recorder()


def _dump_spans(path: Path) -> tuple[dict[tuple[str, str], dict[str, Any]], list[dict[str, Any]]]:
    """Spans by (trace id, span id), and the resources they came with, straight from the JSON."""
    spans: dict[tuple[str, str], dict[str, Any]] = {}
    resources: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            attrs = {a["key"]: next(iter(a["value"].values())) for a in rs["resource"]["attributes"]}
            resources.append(attrs)
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    spans[(s["traceId"], s["spanId"])] = s
    return spans, resources


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recorded")
    committed = (SCENARIOS / SCENARIO / "dump.json").read_bytes()
    proc = subprocess.run(
        [sys.executable, str(RECORD), "--out", str(out), SCENARIO],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (SCENARIOS / SCENARIO / "dump.json").read_bytes() == committed, "--out must leave the fixture alone"
    return out / SCENARIO


def test_every_truth_span_is_in_the_dump_with_its_name(recorded: Path) -> None:
    spans, _ = _dump_spans(recorded / "dump.json")
    truth = [json.loads(x) for x in (recorded / "truth.jsonl").read_text().splitlines()]
    assert truth
    for rec in truth:
        span = spans.get((rec["trace_id"], rec["span_id"]))
        assert span is not None, f"{rec['name']} {rec['span_id']} is not in the dump"
        assert span["name"] == rec["name"]


def test_labels_match_the_dump(recorded: Path) -> None:
    spans, _ = _dump_spans(recorded / "dump.json")
    truth = [json.loads(x) for x in (recorded / "truth.jsonl").read_text().splitlines()]
    env = json.loads((SCENARIOS / SCENARIO / "scenario.json").read_text())["env"]
    requests = int(env["CTX_CALLERS"]) * int(env["CTX_REQUESTS"])
    orphans = [r for r in truth if r["label"] == "orphan"]
    roots = [r for r in truth if r["label"] == "root"]
    # Every render_chart lost its context: one orphan per request, one root per request + start-up.
    assert len(orphans) == requests
    assert sorted({r["name"] for r in roots}) == ["POST /reports", "load_config"]
    assert len(roots) == requests + 1
    for rec in orphans:
        orphan = spans[(rec["trace_id"], rec["span_id"])]
        assert not orphan.get("parentSpanId"), "an orphan must be a root in the dump"
        parent_ref = rec["intended_parent"]
        parent = spans.get((parent_ref["trace_id"], parent_ref["span_id"]))
        assert parent is not None, "the intended parent must have been exported"
        assert parent["name"] == parent_ref["name"] == "build_report"
        assert parent_ref["trace_id"] != rec["trace_id"], "the intended parent lives in another trace"
        # The dispatcher waited for the work, so the orphan ran inside it.
        assert int(parent["startTimeUnixNano"]) <= int(orphan["startTimeUnixNano"])
        assert int(orphan["endTimeUnixNano"]) <= int(parent["endTimeUnixNano"])
    labelled = {(r["trace_id"], r["span_id"]) for r in truth}
    unlabelled_roots = [s["name"] for k, s in spans.items() if not s.get("parentSpanId") and k not in labelled]
    assert unlabelled_roots == []


def test_meta_and_project_reader_agree_with_the_dump(recorded: Path) -> None:
    spans, resources = _dump_spans(recorded / "dump.json")
    meta = json.loads((recorded / "meta.json").read_text())
    assert meta["counts"]["spans"] == len(spans)
    assert meta["counts"]["truth"]["orphan"] == sum(1 for s in spans.values() if s["name"] == "render_chart")
    assert meta["sdk_versions"]["opentelemetry-sdk"]
    assert len(read_paths([recorded / "dump.json"]).spans) == len(spans)
    # What the stock Python SDK says about where a span ran: a per-process service.instance.id,
    # but no process.pid unless the process resource detector is switched on.
    for attrs in resources:
        assert attrs["service.name"] == "report-service"
        assert attrs["telemetry.sdk.language"] == "python"
        assert attrs.get("service.instance.id")
        assert "process.pid" not in attrs
    assert len({r["service.instance.id"] for r in resources}) == 1


BAD_APP = """
import json, os
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
with provider.get_tracer("bad").start_as_current_span("GET /health") as span:
    ctx = span.get_span_context()
with open(os.environ["CTXDOCTOR_TRUTH"], "a") as fh:
    fh.write(json.dumps({"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}",
                         "name": "GET /health", "label": "root", "intended_parent": None,
                         "parent_remote": None}) + "\\n")
    fh.write(json.dumps({"trace_id": "0" * 31 + "1", "span_id": "0" * 15 + "1", "name": "ghost",
                         "label": "orphan", "intended_parent": None, "parent_remote": None}) + "\\n")
provider.shutdown()
"""


def test_a_recording_that_disagrees_with_its_truth_replaces_nothing(tmp_path: Path) -> None:
    app = tmp_path / "bad_app.py"
    app.write_text(BAD_APP)
    folder = tmp_path / "scenarios" / "bad"
    folder.mkdir(parents=True)
    (folder / "scenario.json").write_text(
        json.dumps(
            {
                "description": "exports one span but labels a span that was never made",
                "runtime": "python",
                "kind": "control",
                "boundary": None,
                "command": ["{python}", str(app)],
                "env": {},
                "protocol": "grpc",
                "timeout_s": 60,
                "expect_gaps": [],
            }
        )
    )
    (folder / "dump.json").write_text("previous dump\n")
    scenario = recorder.load_scenario(folder / "scenario.json")
    with pytest.raises(recorder.RecordError, match="ghost"):
        recorder.record(scenario)
    assert (folder / "dump.json").read_text() == "previous dump\n"
    assert not (folder / "truth.jsonl").exists()


def _span(trace_id: str, span_id: str, parent: str, name: str, flags: int = 0x100) -> Any:
    return recorder.DumpSpan(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, flags=flags)


def _rec(span: Any, label: str, parent: Any = None, remote: bool | None = None) -> dict[str, Any]:
    ref = None if parent is None else {"trace_id": parent.trace_id, "span_id": parent.span_id, "name": parent.name}
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "name": span.name,
        "label": label,
        "intended_parent": ref,
        "parent_remote": remote,
    }


T1, T2, T3 = "a" * 32, "b" * 32, "c" * 32
SERVER = _span(T1, "1" * 16, "", "POST /reports")
HANDLER = _span(T1, "2" * 16, "1" * 16, "build_report")
ORPHAN = _span(T2, "3" * 16, "", "render_chart")
LOST = _span(T3, "4" * 16, "9" * 16, "reindex_shard", flags=0x300)
GOOD_SPANS = [SERVER, HANDLER, ORPHAN, LOST]
GOOD_TRUTH = [_rec(SERVER, "root"), _rec(ORPHAN, "orphan", HANDLER), _rec(LOST, "missing_parent", remote=True)]
GAPS = ({"parent_name": "build_report", "orphan_name": "render_chart", "boundary": "thread"},)


def _scenario(gaps: tuple[dict[str, str], ...] = GAPS) -> Any:
    return recorder.Scenario(
        name="t",
        folder=Path("."),
        description="d",
        runtime="python",
        kind="naive" if gaps else "fixed",
        boundary="thread",
        command=("true",),
        env={},
        protocol="grpc",
        timeout_s=1.0,
        expect_gaps=gaps,
    )


def test_check_accepts_consistent_truth() -> None:
    assert recorder.check(GOOD_SPANS, GOOD_TRUTH, _scenario()) == []


@pytest.mark.parametrize(
    ("spans", "truth", "gaps", "problem"),
    [
        (GOOD_SPANS, [*GOOD_TRUTH, _rec(_span(T1, "5" * 16, "", "ghost"), "root")], GAPS, "not in the dump"),
        (GOOD_SPANS, GOOD_TRUTH[1:], GAPS, "has no truth label"),
        (GOOD_SPANS, GOOD_TRUTH[:2], GAPS, "not labelled missing_parent"),
        (GOOD_SPANS, [GOOD_TRUTH[0], _rec(HANDLER, "orphan", SERVER), GOOD_TRUTH[2]], GAPS, "has a parent"),
        (GOOD_SPANS, [GOOD_TRUTH[0], GOOD_TRUTH[1], _rec(LOST, "missing_parent", remote=False)], GAPS, "flags"),
        (GOOD_SPANS, GOOD_TRUTH, (), "not declared in expect_gaps"),
        (
            GOOD_SPANS,
            GOOD_TRUTH,
            ({"parent_name": "export_data", "orphan_name": "compress_chunk", "boundary": "process"},),
            "did not happen",
        ),
        ([*GOOD_SPANS, ORPHAN], GOOD_TRUTH, GAPS, "appears twice"),
    ],
    ids=[
        "ghost",
        "unlabelled-root",
        "unlabelled-lost-parent",
        "child-called-orphan",
        "remote-flag",
        "undeclared-gap",
        "missing-gap",
        "duplicate",
    ],
)
def test_check_reports_each_disagreement(
    spans: list[Any], truth: list[dict[str, Any]], gaps: tuple[dict[str, str], ...], problem: str
) -> None:
    problems = recorder.check(spans, truth, _scenario(gaps))
    assert any(problem in p for p in problems), problems
