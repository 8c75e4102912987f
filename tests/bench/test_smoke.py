"""Smoke test of bench/analyze.py at 10k spans: the generated dumps are what the benchmark claims.

The benchmark's figures are only worth something if its dumps are reproducible and valid, and if
the JSON and proto files it compares hold the same spans. The two encoders are hand-written, so
they are checked against each other through ctxdoctor's two independent readers, and the
generator's own counts are checked against the spans that come out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from ctxdoctor.readers import read_paths
from tests.helpers import ROOT

N = 10_000

# The generator runs in its own interpreter, as the benchmark runs it: tests do not import bench/.
# It writes the dump, the same lines again from a fresh generator, the first line under another
# seed, and its own counts, so the tests below compare files only.
_GENERATE = """
import dataclasses, json, sys
from pathlib import Path
from bench import dumpgen
out, n = Path(sys.argv[1]), int(sys.argv[2])
written = dumpgen.write_dump(out, n, dumpgen.DEFAULT_SEED)
again = list(dumpgen.iter_lines(n, dumpgen.DEFAULT_SEED))
(out / "again.json").write_bytes(b"".join(j + b"\\n" for j, _ in again))
(out / "again.pb").write_bytes(b"".join(len(p).to_bytes(4, "big") + p for _, p in again))
(out / "other-seed.json").write_bytes(next(dumpgen.iter_lines(n, dumpgen.DEFAULT_SEED + 1))[0])
stats = {k: v for k, v in vars(written.stats).items() if isinstance(v, int)}
(out / "generated.json").write_text(json.dumps({"stats": stats, "spans_per_line": dumpgen.SPANS_PER_LINE}))
"""


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimpleNamespace]:
    out = tmp_path_factory.mktemp("dump10k")
    run = subprocess.run(
        [sys.executable, "-c", _GENERATE, str(out), str(N)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
    meta = json.loads((out / "generated.json").read_text())
    return out, SimpleNamespace(stats=SimpleNamespace(**meta["stats"]), spans_per_line=meta["spans_per_line"])


def test_generator_is_deterministic(dump: tuple[Path, SimpleNamespace]) -> None:
    out, _ = dump
    assert (out / "again.json").read_bytes() == (out / "dump.json").read_bytes()
    assert (out / "again.pb").read_bytes() == (out / "dump.pb").read_bytes()
    first = (out / "dump.json").read_bytes().splitlines()[0]
    assert (out / "other-seed.json").read_bytes() != first, "a different seed must give a different dump"


def test_json_and_proto_read_to_the_same_spans(dump: tuple[Path, SimpleNamespace]) -> None:
    out, written = dump
    from_json = read_paths([out / "dump.json"])
    from_proto = read_paths([out / "dump.pb"])
    assert not from_json.warnings and not from_proto.warnings
    assert len(from_json.spans) == N == written.stats.spans
    assert from_json.spans == from_proto.spans
    # ~512 spans per line, as the Collector's batches come.
    lines = (out / "dump.json").read_bytes().splitlines()
    assert len(lines) == written.stats.lines == -(-N // written.spans_per_line)


def test_json_is_strict_otlp(dump: tuple[Path, SimpleNamespace]) -> None:
    out, _ = dump
    first = json.loads((out / "dump.json").read_bytes().splitlines()[0])
    span = first["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(span["traceId"]) == 32 and int(span["traceId"], 16)
    assert len(span["spanId"]) == 16 and int(span["spanId"], 16)
    assert isinstance(span["startTimeUnixNano"], str) and isinstance(span["kind"], int)
    assert "trace_id" not in span and "resource_spans" not in first


def test_generator_counts_match_the_spans(dump: tuple[Path, SimpleNamespace]) -> None:
    out, written = dump
    st = written.stats
    spans = read_paths([out / "dump.json"]).spans
    ids = {(s.trace_id, s.span_id) for s in spans}
    assert len(ids) == N, "span ids are unique"
    roots = [s for s in spans if s.is_root]
    assert len(roots) == st.roots + st.orphans == st.traces
    missing = [s for s in spans if s.parent_span_id and (s.trace_id, s.parent_span_id) not in ids]
    assert len(missing) == st.missing_parent > 0
    truth = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    labels = Counter(t["label"] for t in truth)
    assert labels == {"root": st.roots, "orphan": st.orphans, "missing_parent": st.missing_parent}
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    for t in truth:
        span = by_id[(int(t["trace_id"], 16), int(t["span_id"], 16))]
        if t["label"] != "orphan":
            continue
        # An orphan is an INTERNAL root that starts inside its dispatching span, in another trace.
        parent = by_id[(int(t["intended_parent"]["trace_id"], 16), int(t["intended_parent"]["span_id"], 16))]
        assert span.is_root and span.kind == 1 and span.trace_id != parent.trace_id
        assert parent.start < span.start < span.end < parent.end
        assert span.unit.pid == parent.unit.pid or span.unit.parent_pid == parent.unit.pid
    # About 5% of the roots are orphans, the share the generator is built for (bench/dumpgen.py).
    assert 0.03 < st.orphans / st.traces < 0.08


def test_harness_runs_every_pass(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "bench/analyze.py",
            "--sizes",
            "10k",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out-dir",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    (result,) = (tmp_path / "out").glob("analyze-*.json")
    doc = json.loads(result.read_text())
    passes = doc["sizes"]["10k"]["passes"]
    for name in ("floor", "reference", "proto-tuples"):
        assert passes[name]["ok"], passes[name]["problems"]
        assert passes[name]["result"]["spans"] == N if name != "floor" else passes[name]["result"]["lines"] > 0
        assert passes[name]["peak_rss_bytes"] > 0 and passes[name]["wall_s"] > 0
    ctx = passes["ctxdoctor"]
    if "skipped" not in ctx:
        assert ctx["ok"], ctx["problems"]
        assert ctx["summary"]["spans"] == N
    assert "ratios:" in run.stdout and "target analyze JSON wall" in run.stdout
