"""The comparison workloads of ``bench/analyze.py``, one per process so each has its own peak RSS.

``python -m bench.passes <pass> FILE...`` prints one JSON object: the pass, the seconds spent
on the work itself (after interpreter start-up and imports) and what it found, so the harness can
check that the passes read the same number of spans.

- ``floor``: ``orjson.loads`` of every line and nothing else: what it costs to turn the dump
  into Python objects once, the yardstick ctxdoctor is measured against. (A typed decoder that
  skips the fields it does not need can go below it.)
- ``reference``: the simple analysis, written the way a careful engineer would
  in an afternoon: orjson into tuples, group by trace, sort by start, then a per-process sweep
  for roots that start inside another trace's span. No tricks beyond that.
- ``proto-tuples``: the same tuples from the Collector proto format (upb protobuf), the
  "about 1M spans/s" baseline for the proto reader.
- ``ctxdoctor-read``: only ``ctxdoctor.readers.read_paths``, to split ctxdoctor's time between
  reading and diagnosing.
"""

from __future__ import annotations

import heapq
import json
import struct
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any

#: SERVER and CONSUMER roots are entry points, never suspected.
_ENTRY_KINDS = (2, 5)
#: What makes two resources one process (worker threads with their own SDK share all three).
_PROCESS_KEYS = ("service.name", "host.name", "process.pid")


def floor(paths: list[Path]) -> dict[str, Any]:
    import orjson

    loads = orjson.loads
    lines = 0
    for p in paths:
        with p.open("rb") as fh:
            for line in fh:
                loads(line)
                lines += 1
    return {"lines": lines}


def _sweep(spans: list[tuple[Any, ...]]) -> dict[str, int]:
    """Group, sort and sweep: tuples are (trace, span, parent, kind, start, end, process)."""
    traces: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
    for sp in spans:
        traces[sp[0]].append(sp)
    missing = roots = 0
    start_of = itemgetter(4)
    for group in traces.values():
        group.sort(key=start_of)
        ids = {sp[1] for sp in group}
        for sp in group:
            if not sp[2]:
                roots += 1
            elif sp[2] not in ids:
                missing += 1
    by_proc: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for sp in spans:
        by_proc[sp[6]].append(sp)
    suspects = orphans = 0
    for group in by_proc.values():
        group.sort(key=start_of)
        active: list[tuple[int, Any]] = []  # (end, trace) of spans that may still contain the next start
        for sp in group:
            start = sp[4]
            while active and active[0][0] < start:
                heapq.heappop(active)
            if not sp[2] and sp[3] not in _ENTRY_KINDS:
                suspects += 1
                tid = sp[0]
                if any(a[1] != tid for a in active):
                    orphans += 1
            heapq.heappush(active, (sp[5], sp[0]))
    return {
        "spans": len(spans),
        "traces": len(traces),
        "roots": roots,
        "missing_parent": missing,
        "suspect_roots": suspects,
        "orphan_candidates": orphans,
        "processes": len(by_proc),
    }


def reference(paths: list[Path]) -> dict[str, Any]:
    import orjson

    loads = orjson.loads
    procs: dict[tuple[Any, ...], int] = {}
    spans: list[tuple[Any, ...]] = []
    append = spans.append
    for p in paths:
        with p.open("rb") as fh:
            for line in fh:
                for rs in loads(line).get("resourceSpans", ()):
                    attrs = {kv["key"]: kv.get("value", {}) for kv in rs.get("resource", {}).get("attributes", ())}
                    key = tuple(next(iter(attrs.get(k, {}).values()), None) for k in _PROCESS_KEYS)
                    proc = procs.setdefault(key, len(procs))
                    for ss in rs.get("scopeSpans", ()):
                        for s in ss.get("spans", ()):
                            append(
                                (
                                    s["traceId"],
                                    s["spanId"],
                                    s.get("parentSpanId", ""),
                                    s.get("kind", 0),
                                    int(s["startTimeUnixNano"]),
                                    int(s["endTimeUnixNano"]),
                                    proc,
                                )
                            )
    return _sweep(spans)


def proto_tuples(paths: list[Path]) -> dict[str, Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    unpack = struct.Struct(">I").unpack
    procs: dict[tuple[Any, ...], int] = {}
    spans: list[tuple[Any, ...]] = []
    append = spans.append
    for p in paths:
        with p.open("rb") as fh:
            while header := fh.read(4):
                (n,) = unpack(header)
                req = ExportTraceServiceRequest.FromString(fh.read(n))
                for rs in req.resource_spans:
                    attrs = {kv.key: kv.value for kv in rs.resource.attributes}
                    key = tuple(
                        getattr(attrs[k], attrs[k].WhichOneof("value") or "string_value") if k in attrs else None
                        for k in _PROCESS_KEYS
                    )
                    proc = procs.setdefault(key, len(procs))
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            append(
                                (
                                    s.trace_id,
                                    s.span_id,
                                    s.parent_span_id,
                                    s.kind,
                                    s.start_time_unix_nano,
                                    s.end_time_unix_nano,
                                    proc,
                                )
                            )
    return {"spans": len(spans), "processes": len(procs)}


def ctxdoctor_read(paths: list[Path]) -> dict[str, Any]:
    from ctxdoctor.readers import read_paths

    dump = read_paths(paths, jobs=0)  # as analyze reads: one process per CPU
    return {"spans": len(dump.spans), "warnings": len(dump.warnings)}


PASSES: dict[str, Callable[[list[Path]], dict[str, Any]]] = {
    "floor": floor,
    "reference": reference,
    "proto-tuples": proto_tuples,
    "ctxdoctor-read": ctxdoctor_read,
}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in PASSES:
        print(f"usage: python -m bench.passes {{{','.join(PASSES)}}} FILE...", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    result = PASSES[argv[0]]([Path(a) for a in argv[1:]])
    work = time.perf_counter() - t0
    print(json.dumps({"pass": argv[0], "work_s": work, "result": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
