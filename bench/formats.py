"""How fast the readers of other systems' JSON (Jaeger, Zipkin, Tempo) are, against OTLP/JSON
measured in the same run.

    .venv/bin/python bench/formats.py                # 100 copies of the naive worker_threads fixture
    .venv/bin/python bench/formats.py --copies 600   # ~100k spans

Each copy of the fixture gets its own trace ids; the same spans are written as OTLP/JSON lines,
a Jaeger query API answer, a Zipkin v2 array and a Tempo answer (``tests/readers/otlp_shapes``),
and each file is read with ``read_paths``, best of three. Prints spans/s and the ratio to
OTLP/JSON with the load average, and writes them as JSON to ``bench/out/formats-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctxdoctor.readers import read_paths
from tests.readers.otlp_shapes import to_jaeger, to_tempo, to_zipkin

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "fixtures" / "scenarios" / "node-worker-threads-naive" / "dump.json"


def _copies(n: int) -> list[dict[str, Any]]:
    base = FIXTURE.read_text()
    out = []
    for i in range(n):
        for line in base.splitlines():
            req = json.loads(line)
            for rs in req["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for s in ss["spans"]:
                        s["traceId"] = f"{i:08x}" + s["traceId"][8:]
                        for lk in s.get("links", ()):
                            lk["traceId"] = f"{i:08x}" + lk["traceId"][8:]
            out.append(req)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=100)
    args = ap.parse_args()
    reqs = _copies(args.copies)
    shapes = {
        "otlp-json": "\n".join(json.dumps(r) for r in reqs) + "\n",
        "jaeger": json.dumps(to_jaeger(reqs)),
        "zipkin": json.dumps(to_zipkin(reqs)),
        "tempo": json.dumps(to_tempo(reqs)),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in shapes.items():
            path = Path(tmp) / f"{name}.json"
            path.write_text(text)
            best = (float("inf"), float("inf"))
            spans = 0
            for _ in range(3):
                load = os.getloadavg()[0]
                wall, cpu = time.perf_counter(), time.process_time()
                spans = len(read_paths([path]).spans)
                best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
            rows.append(
                {
                    "format": name,
                    "spans": spans,
                    "mb": path.stat().st_size / 1e6,
                    "wall_s": best[0],
                    "cpu_s": best[1],
                    "load": load,
                }
            )
    base = rows[0]["cpu_s"]
    head = ("format", "spans", "MB", "wall s", "cpu s", "k spans/s (cpu)", "x OTLP/JSON", "load")
    print("{:10s} {:>7s} {:>6s} {:>7s} {:>6s} {:>16s} {:>11s} {:>5s}".format(*head))
    for r in rows:
        print(
            f"{r['format']:10s} {r['spans']:7d} {r['mb']:6.1f} {r['wall_s']:7.2f} {r['cpu_s']:6.2f} "
            f"{r['spans'] / r['cpu_s'] / 1000:16.0f} {r['cpu_s'] / base:11.1f} {r['load']:5.1f}"
        )
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / f"formats-{dt.datetime.now():%Y%m%d-%H%M%S}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
