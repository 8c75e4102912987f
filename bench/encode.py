"""Micro-benchmark of the journal -> OTLP/JSON encoders ("the final dump keeps up").

    .venv/bin/python bench/encode.py                # ~1 min
    .venv/bin/python bench/encode.py --lines 10 --repeat 3    # a quick look

Not a test: prints µs per span and spans/s (best of ``--repeat`` runs, one core) for

- **old walker**: what the converter did until the wire transcoder replaced it: upb parse, the id
  screening, then a walk over the parsed messages building dicts that msgspec serialises. Kept
  here, only here, as the baseline.
- **transcoder**: ``ctxdoctor.receiver.encode.Transcoder`` on the same bytes: warm (one
  transcoder over the whole stream, as the converter runs) and cold (a fresh one per request: only
  the repeats within one request help).
- **MessageToDict + msgspec**: upb parse, ``json_format.MessageToDict`` and msgspec; ids stay
  base64, so this is a lower bound for that route to OTLP/JSON.

on two inputs, each a list of serialised 512-span ``ExportTraceServiceRequest``s:

- **listen batches**: what ``bench/listen.py``'s load generator sends: one realistic batch with
  the batch number written into its ids and times. Everything else repeats from batch to batch, so
  warm caches do better here than on real traffic.
- **distinct lines**: consecutive lines of the ``bench/dumpgen.py`` traffic (seed 6): different
  spans, services and attribute values, as a receiver sees them.

It checks first that the old walker and the transcoder write the same bytes for every request.

Then the **converter** as the receiver runs it at shutdown (``ctxdoctor.receiver.convert.Converter``,
live figures on): a journal of ``--converter-batches`` listen batches drained into a dump, by this
process alone and with worker processes (``default_workers()``, one per core), alternately
``--repeat`` times. That adds reading the journal, writing the dump and counting traces to the
transcoding. Needs ~2.4 GB of disk in ``bench/.cache`` per 1,000 batches, briefly.
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from bench import dumpgen
from bench.listen_load import batch, build_template
from ctxdoctor.receiver.convert import EXACT_TRACES, Converter, TraceCounter, _trace_ids, default_workers
from ctxdoctor.receiver.encode import Transcoder, screen_request
from ctxdoctor.receiver.sink import journal_record

CACHE = Path(__file__).resolve().parent / ".cache"

# ---------------------------------------------------------------------------------------------
# The baseline: the upb walker the converter used before the transcoder (ctxdoctor at c5d9ee1)
# ---------------------------------------------------------------------------------------------

_json_encode = msgspec.json.Encoder().encode


def _double(v: float) -> float | str:
    if math.isfinite(v):
        return v
    if math.isnan(v):
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def any_value(v: AnyValue) -> dict[str, Any]:
    which = v.WhichOneof("value")
    if which == "string_value":
        return {"stringValue": v.string_value}
    if which == "int_value":
        return {"intValue": str(v.int_value)}
    if which == "bool_value":
        return {"boolValue": v.bool_value}
    if which == "double_value":
        return {"doubleValue": _double(v.double_value)}
    if which == "array_value":
        arr = v.array_value
        return {"arrayValue": {"values": [any_value(x) for x in arr.values]} if arr.values else {}}
    if which == "kvlist_value":
        kvl = v.kvlist_value
        return {"kvlistValue": {"values": key_values(kvl.values)} if kvl.values else {}}
    if which == "bytes_value":
        return {"bytesValue": base64.b64encode(v.bytes_value).decode("ascii")}
    if which == "string_value_strindex":
        return {"stringValueStrindex": v.string_value_strindex}
    return {}


def key_value(kv: KeyValue) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if kv.key:
        out["key"] = kv.key
    if kv.HasField("value"):
        out["value"] = any_value(kv.value)
    if kv.key_strindex:
        out["keyStrindex"] = kv.key_strindex
    return out


def key_values(kvs: Iterable[KeyValue]) -> list[dict[str, Any]]:
    out = []
    for kv in kvs:
        value = kv.value
        which = value.WhichOneof("value")
        if kv.key and which == "string_value" and not kv.key_strindex:
            out.append({"key": kv.key, "value": {"stringValue": value.string_value}})
        else:
            out.append(key_value(kv))
    return out


def resource(r: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.attributes:
        out["attributes"] = key_values(r.attributes)
    if r.dropped_attributes_count:
        out["droppedAttributesCount"] = r.dropped_attributes_count
    if r.entity_refs:
        refs = []
        for e in r.entity_refs:
            ref: dict[str, Any] = {}
            if e.schema_url:
                ref["schemaUrl"] = e.schema_url
            if e.type:
                ref["type"] = e.type
            if e.id_keys:
                ref["idKeys"] = list(e.id_keys)
            if e.description_keys:
                ref["descriptionKeys"] = list(e.description_keys)
            refs.append(ref)
        out["entityRefs"] = refs
    return out


def scope(s: InstrumentationScope) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if s.name:
        out["name"] = s.name
    if s.version:
        out["version"] = s.version
    if s.attributes:
        out["attributes"] = key_values(s.attributes)
    if s.dropped_attributes_count:
        out["droppedAttributesCount"] = s.dropped_attributes_count
    return out


def old_encode(body: bytes) -> bytes:
    """A journal record -> its dump line, as the converter did it before the transcoder."""
    req = ExportTraceServiceRequest.FromString(body)
    screened = screen_request(req)
    resource_spans = []
    for rs in req.resource_spans:
        rs_out: dict[str, Any] = {}
        if rs.HasField("resource"):
            rs_out["resource"] = resource(rs.resource)
        scope_list = []
        for ss in rs.scope_spans:
            ss_out: dict[str, Any] = {}
            if ss.HasField("scope"):
                ss_out["scope"] = scope(ss.scope)
            spans_out = [_span(s) for s in ss.spans]
            if spans_out:
                ss_out["spans"] = spans_out
            if ss.schema_url:
                ss_out["schemaUrl"] = ss.schema_url
            scope_list.append(ss_out)
        if scope_list:
            rs_out["scopeSpans"] = scope_list
        if rs.schema_url:
            rs_out["schemaUrl"] = rs.schema_url
        resource_spans.append(rs_out)
    return b"" if not screened.spans else _json_encode({"resourceSpans": resource_spans}) + b"\n"


def _span(s: Any) -> dict[str, Any]:
    parent = s.parent_span_id
    o: dict[str, Any] = {"traceId": s.trace_id.hex(), "spanId": s.span_id.hex()}
    if s.trace_state:
        o["traceState"] = s.trace_state
    if parent:
        o["parentSpanId"] = parent.hex()
    if s.flags:
        o["flags"] = s.flags
    if s.name:
        o["name"] = s.name
    if s.kind:
        o["kind"] = s.kind
    if s.start_time_unix_nano:
        o["startTimeUnixNano"] = str(s.start_time_unix_nano)
    if s.end_time_unix_nano:
        o["endTimeUnixNano"] = str(s.end_time_unix_nano)
    if s.attributes:
        o["attributes"] = key_values(s.attributes)
    if s.dropped_attributes_count:
        o["droppedAttributesCount"] = s.dropped_attributes_count
    if s.events:
        o["events"] = [_event(e) for e in s.events]
    if s.dropped_events_count:
        o["droppedEventsCount"] = s.dropped_events_count
    if s.links:
        o["links"] = [_link(lk) for lk in s.links]
    if s.dropped_links_count:
        o["droppedLinksCount"] = s.dropped_links_count
    if s.HasField("status"):
        st = s.status
        so: dict[str, Any] = {}
        if st.message:
            so["message"] = st.message
        if st.code:
            so["code"] = st.code
        o["status"] = so
    return o


def _event(e: Any) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if e.time_unix_nano:
        o["timeUnixNano"] = str(e.time_unix_nano)
    if e.name:
        o["name"] = e.name
    if e.attributes:
        o["attributes"] = key_values(e.attributes)
    if e.dropped_attributes_count:
        o["droppedAttributesCount"] = e.dropped_attributes_count
    return o


def _link(lk: Any) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if lk.trace_id:
        o["traceId"] = lk.trace_id.hex()
    if lk.span_id:
        o["spanId"] = lk.span_id.hex()
    if lk.trace_state:
        o["traceState"] = lk.trace_state
    if lk.attributes:
        o["attributes"] = key_values(lk.attributes)
    if lk.dropped_attributes_count:
        o["droppedAttributesCount"] = lk.dropped_attributes_count
    if lk.flags:
        o["flags"] = lk.flags
    return o


# ---------------------------------------------------------------------------------------------
# The other encoders, the inputs, the timing
# ---------------------------------------------------------------------------------------------


def message_to_dict(body: bytes) -> bytes:
    req = ExportTraceServiceRequest.FromString(body)
    return _json_encode(json_format.MessageToDict(req, use_integers_for_enums=True)) + b"\n"


def listen_batches(n: int, seed: int) -> list[bytes]:
    template = build_template(seed)
    return [batch(template, i) for i in range(1, n + 1)]


def distinct_lines(n: int, seed: int) -> list[bytes]:
    out = []
    for recs in dumpgen.Generator(seed).lines(dumpgen.SPANS_PER_LINE * n):
        out.append(dumpgen.encode_line(recs)[1])
        if len(out) == n:
            break
    return out


def spans_in(bodies: list[bytes]) -> int:
    return sum(
        len(ss.spans)
        for b in bodies
        for rs in ExportTraceServiceRequest.FromString(b).resource_spans
        for ss in rs.scope_spans
    )


def best_of(repeat: int, bodies: list[bytes], make: Callable[[], Callable[[bytes], object]]) -> float:
    """Best wall time over ``repeat`` runs; ``make`` gives a fresh encoder for each run. The
    cyclic garbage collector stays on, as in the converter: it costs the old walker, which builds
    dicts for every span, ~15%; the transcoder builds few containers."""
    best = math.inf
    for _ in range(repeat):
        encode = make()
        gc.collect()
        t0 = time.perf_counter()
        for body in bodies:
            encode(body)
        best = min(best, time.perf_counter() - t0)
    return best


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def converter(batches: int, repeat: int, seed: int) -> bool:
    """Drain a journal as the receiver's converter does at shutdown; True if every dump is the same."""
    CACHE.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="encode-", dir=CACHE))
    try:
        journal = work / "journal.binpb"
        template = build_template(seed)
        with journal.open("wb") as f:
            for n in range(1, batches + 1):
                f.write(journal_record(batch(template, n)))
        size = journal.stat().st_size
        print(f"\nconverter: a journal of {batches} listen batches ({size / 1e6:.0f} MB), drained as at shutdown")
        print(f"  {'mode':<36} {'µs/span':>8} {'spans/s':>10} {'wall s':>7}  load")
        first: hashlib.blake2b | None = None
        same = True
        for _ in range(repeat):
            for workers in (0, default_workers()):
                dump = work / "dump.json"
                conv = Converter(journal, dump, live=True, workers=workers)
                t0 = time.perf_counter()
                while conv.step(limit=size):
                    pass
                took = time.perf_counter() - t0
                conv.close()
                spans = conv.progress.spans
                if not workers:
                    label = "this process"
                elif conv.used_workers:
                    label = f"{workers} worker processes"
                else:
                    label = f"{workers} workers asked; cores busy: alone"
                print(f"  {label:<36} {took / spans * 1e6:8.2f} {spans / took:10,.0f} {took:7.2f}  {load()}")
                digest = hashlib.blake2b()
                with dump.open("rb") as f:
                    while block := f.read(1 << 24):
                        digest.update(block)
                first = first or digest
                same = same and digest.digest() == first.digest()
                dump.unlink()
        return same
    finally:
        shutil.rmtree(work)


class OldTraceCounter(TraceCounter):
    """The estimate as it was before faa290b, the baseline: every span's id mixed in Python."""

    def add(self, trace_ids: Iterable[bytes]) -> None:
        if self._exact is not None:
            super().add(trace_ids)
            return
        for t in trace_ids:
            self._old_hll(t)

    def _old_hll(self, trace_id: bytes) -> None:
        mask = 0xFFFFFFFFFFFFFFFF
        t = int.from_bytes(trace_id, "big")
        h = (t ^ (t >> 64)) & mask
        h = ((h ^ (h >> 33)) * 0xFF51AFD7ED558CCD) & mask
        h = ((h ^ (h >> 33)) * 0xC4CEB9FE1A85EC53) & mask
        h ^= h >> 33
        idx = h & (self._M - 1)
        rest = h >> self._P
        rank = 51 - rest.bit_length() if rest else 51
        if rank > self._regs[idx]:
            self._regs[idx] = rank


def live_figures(bodies: list[bytes], repeat: int) -> None:
    """What the live view costs per span: the observer's parse, and counting the traces."""
    spans = spans_in(bodies)
    ids = [_trace_ids(b) or [] for b in bodies]
    print(f"\nlive figures: {len(bodies)} listen batches, {spans:,} spans")
    print(f"  {'step':<44} {'µs/request':>10} {'ns/span':>8}  load")

    def report(label: str, took: float) -> None:
        print(f"  {label:<44} {took / len(bodies) * 1e6:10.1f} {took / spans * 1e9:8.0f}  {load()}")

    report("read ahead: upb parse + trace ids", best_of(repeat, bodies, lambda: _trace_ids))
    for label, cls, warm in (
        ("count traces, exact (< 200k)", TraceCounter, 0),
        ("count traces, estimate, per span (old)", OldTraceCounter, EXACT_TRACES + 1),
        ("count traces, estimate, per distinct id", TraceCounter, EXACT_TRACES + 1),
    ):
        best = float("inf")
        for _ in range(repeat):
            tc = cls()
            if warm:
                tc.add([i.to_bytes(16, "big") for i in range(warm)])
                assert tc.estimated
            t0 = time.perf_counter()
            for request_ids in ids:
                tc.add(request_ids)
            best = min(best, time.perf_counter() - t0)
        report(label, best)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=40, help="512-span requests per input")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best is kept")
    ap.add_argument("--seed", type=int, default=dumpgen.DEFAULT_SEED)
    ap.add_argument("--converter-batches", type=int, default=1000, help="journal size for the converter (0: skip)")
    args = ap.parse_args(argv)

    print(f"load average at start: {load()}  (2 cores shared; the figures are one core's)")
    inputs = {
        "listen batches": listen_batches(args.lines, args.seed),
        "distinct lines": distinct_lines(args.lines, args.seed),
    }

    def cold(body: bytes) -> object:
        return Transcoder().transcode(body)

    encoders: list[tuple[str, Callable[[], Callable[[bytes], object]]]] = [
        ("old walker (upb + dicts + msgspec)", lambda: old_encode),
        ("transcoder, warm", lambda: Transcoder().transcode),
        ("transcoder, cold per request", lambda: cold),
        ("MessageToDict + msgspec", lambda: message_to_dict),
    ]
    for name, bodies in inputs.items():
        spans = spans_in(bodies)
        tc = Transcoder()
        same = all(old_encode(b) == tc.transcode(b).line for b in bodies)
        mb = sum(len(b) for b in bodies) / 1e6
        print(
            f"\n{name}: {len(bodies)} requests, {spans:,} spans, {mb:.1f} MB of protobuf; "
            f"old walker and transcoder write the same bytes: {'yes' if same else 'NO'}"
        )
        print(f"  {'encoder':<36} {'µs/span':>8} {'spans/s':>10} {'vs old':>7}  load")
        base = None
        for label, make in encoders:
            took = best_of(args.repeat, bodies, make)
            us = took / spans * 1e6
            base = base or us
            print(f"  {label:<36} {us:8.2f} {spans / took:10,.0f} {base / us:6.2f}x  {load()}")
        if not same:
            return 1
    live_figures(inputs["listen batches"], args.repeat)
    if args.converter_batches and not converter(args.converter_batches, args.repeat, args.seed):
        print("  the dumps differ between runs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
