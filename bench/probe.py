"""What the ``ctxdoctor run`` probe costs the app: per dispatch, and on a server's requests.

```
.venv/bin/python bench/probe.py [--dispatches 20000] [--repeat 5] [--server-runs 3] [--baseline-probe DIR]
```

Per dispatch: the same loop of dispatches runs in a fresh process with the probe loaded and
without it (the baseline, measured in the same run), inside an active span of a real SDK, as in
a traced app. The difference per dispatch is the probe's cost (target: under 20 µs). Python's
figures are the dispatching thread's CPU time (``time.thread_time``), which other load on a
shared machine disturbs far less than wall time; Node.js's are wall time (``hrtime``; Node 20
has no per-thread CPU clock):

* Python: ``ThreadPoolExecutor.submit`` of a no-op (the probe reads the active span, walks the
  stack to the app's line, wraps the task and writes one fact) and ``threading.Thread.start``;
* Node.js: ``worker.postMessage`` to a worker thread (the probe reads the active span through
  the API's global registration, captures the app's stack frame and writes one fact).

Requests: the fixture servers (``fixtures/apps``) run under ``ctxdoctor run`` with and without
``--no-probe``, alternating. Their built-in load generators send a fixed number of requests, so
the figure is the command's run time per request, median of ``--server-runs`` runs (target: no
measurable change, i.e. a difference within the spread of the baseline runs).

The best of ``--repeat`` runs is taken per side (the least disturbed by other load on a shared
machine), the sides alternating run by run; the load average is printed with the figures.
``--baseline-probe DIR`` adds the probe of another checkout (``DIR/ctxdoctor/probe``) as a third
side on the same loops, alternated with the others: a change's cost before and after, at one load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ctxdoctor.runner.probe import add_probe  # noqa: E402

NODE_MODULES = ROOT / "fixtures" / "apps" / "node" / "node_modules"

PY_LOOP = r"""
import sys, time, threading
from concurrent.futures import ThreadPoolExecutor
from opentelemetry.sdk.trace import TracerProvider
N = int(sys.argv[1]); what = sys.argv[2]
tracer = TracerProvider().get_tracer("bench")
def noop(*a):
    return None
with tracer.start_as_current_span("dispatching"):
    if what == "submit":
        with ThreadPoolExecutor(1) as pool:
            pool.submit(noop).result()
            t = time.thread_time()
            futures = [pool.submit(noop) for _ in range(N)]
            took = time.thread_time() - t
            for f in futures: f.result()
    else:
        threads = [threading.Thread(target=noop) for _ in range(N)]
        t = time.thread_time()
        for th in threads: th.start()
        took = time.thread_time() - t
        for th in threads: th.join()
print(took / N * 1e6)
"""

NODE_LOOP = r"""
const path = require('node:path');
const { Worker } = require('node:worker_threads');
const load = (n) => require(path.join(process.env.BENCH_NODE_MODULES, n));
const api = load('@opentelemetry/api');
const { BasicTracerProvider } = load('@opentelemetry/sdk-trace-base');
const { AsyncLocalStorageContextManager } = load('@opentelemetry/context-async-hooks');
api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
api.trace.setGlobalTracerProvider(new BasicTracerProvider());
const N = Number(process.argv[process.argv.length - 1]);
// The worker says it is up, then blocks and never drains its queue: a worker starting or
// draining while the loop posts would compete for the CPU and the port's lock, and the loop
// would time that instead of the probe.
const ready = new Int32Array(new SharedArrayBuffer(4));
const w = new Worker(
  'const { workerData: r } = require("node:worker_threads"); Atomics.store(r, 0, 1); Atomics.notify(r, 0);' +
    ' Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);',
  { eval: true, workerData: ready },
);
Atomics.wait(ready, 0, 0, 60000);
api.trace.getTracer('bench').startActiveSpan('dispatching', (span) => {
  const msg = { n: 1 };
  for (let i = 0; i < 200; i++) w.postMessage(msg);
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) w.postMessage(msg);
  const took = Number(process.hrtime.bigint() - t) / 1e3;
  span.end();
  console.log(took / N);
  w.terminate();
});
"""


def _env(probe: bool | Path, facts: Path) -> dict[str, str]:
    """The loop's environment: no probe (False), this checkout's (True), or another checkout's
    probe folder, loaded the way ``run`` loads it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CTXDOCTOR_", "CTX_"))}
    env["BENCH_NODE_MODULES"] = str(NODE_MODULES)
    if probe is True:
        add_probe(env, facts)
    elif isinstance(probe, Path):
        env["NODE_OPTIONS"] = f"--require {probe / 'node' / 'probe.cjs'}"
        env["PYTHONPATH"] = str(probe / "python")
        env["CTXDOCTOR_PROBE_FACTS"] = str(facts)
    return env


def _once(argv: list[str], probe: bool | Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(argv, env=_env(probe, Path(tmp) / "f.jsonl"), capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed: {out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def _per_dispatch(argv: list[str], repeat: int, sides: list[bool | Path]) -> list[float]:
    """Best of ``repeat`` runs per side (no probe, this probe, another checkout's), alternating, so
    a change in the machine's load hits every side alike."""
    best = [float("inf")] * len(sides)
    for _ in range(repeat):
        for i, side in enumerate(sides):
            best[i] = min(best[i], _once(argv, side))
    return best


def _server(name: str, probe: bool) -> float:
    spec = json.loads((ROOT / "fixtures" / "scenarios" / name / "scenario.json").read_text())
    argv = [
        a.replace("{apps}", str(ROOT / "fixtures" / "apps")).replace("{python}", sys.executable)
        for a in spec["command"]
    ]
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CTXDOCTOR_", "CTX_"))}
        env.update(spec["env"])
        args = [sys.executable, "-m", "ctxdoctor", "run", "-o", f"{tmp}/d.json", "--report-json", f"{tmp}/r.json"]
        if not probe:
            args.append("--no-probe")
        subprocess.run([*args, "--", *argv], env=env, capture_output=True, timeout=600, cwd=ROOT)
        report = json.loads(Path(f"{tmp}/r.json").read_text())
    requests = int(spec["env"].get("CTX_TASKS") or spec["env"].get("CTX_REQUESTS") or 1)
    return float(report["run"]["duration_s"]) / requests * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dispatches", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--server-runs", type=int, default=3)
    ap.add_argument("--baseline-probe", type=Path, help="a checkout whose probe runs as a third side")
    args = ap.parse_args()
    sides: list[bool | Path] = [False, True]
    if args.baseline_probe is not None:
        older = args.baseline_probe.resolve() / "ctxdoctor" / "probe"
        if not (older / "node" / "probe.cjs").is_file():
            raise SystemExit(f"{older}: no probe there")
        sides.append(older)
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    rows = []
    # The loops run from files, as an app does: the probe then finds the app's line in them (a
    # `-c` or `-e` script has no file, and the probe would walk the whole stack looking for one).
    scripts = Path(tempfile.mkdtemp(prefix="ctxdoctor-bench-probe-"))
    (scripts / "loop.py").write_text(PY_LOOP)
    (scripts / "loop.cjs").write_text(NODE_LOOP)
    py = [sys.executable, str(scripts / "loop.py")]
    rows.append(("python ThreadPoolExecutor.submit", [*py, str(args.dispatches), "submit"]))
    rows.append(("python threading.Thread.start", [*py, str(min(args.dispatches, 2000)), "thread"]))
    if shutil.which("node") and NODE_MODULES.is_dir():
        rows.append(("node Worker.postMessage", ["node", str(scripts / "loop.cjs"), str(args.dispatches)]))
    results = {}
    older_head = f" {'older cost':>10}" if len(sides) == 3 else ""
    print(f"{'dispatch':36} {'baseline µs':>12} {'probe µs':>10} {'cost µs':>9}{older_head}  target < 20 µs")
    for label, argv in rows:
        base, probed, *older = _per_dispatch(argv, args.repeat, sides)
        cost = probed - base
        results[label] = {"baseline_us": base, "probe_us": probed, "cost_us": cost}
        extra = ""
        if older:
            results[label]["older_probe_us"] = older[0]
            extra = f" {older[0] - base:10.2f}"
        print(f"{label:36} {base:12.2f} {probed:10.2f} {cost:9.2f}{extra}  {'PASS' if cost < 20 else 'FAIL'}")
    if args.server_runs:
        print(f"\n{'server (ms per request, median)':36} {'--no-probe':>12} {'probe':>10} {'spread':>9}")
        for name in ("healthy-server", "node-healthy-server"):
            if name.startswith("node") and not NODE_MODULES.is_dir():
                continue
            base, probed = [], []
            for _ in range(args.server_runs):
                base.append(_server(name, False))
                probed.append(_server(name, True))
            spread = max(base) - min(base)
            diff = statistics.median(probed) - statistics.median(base)
            results[name] = {"baseline_ms": base, "probe_ms": probed}
            verdict = "PASS" if abs(diff) <= max(spread, 0.05 * statistics.median(base)) else "FAIL"
            print(
                f"{name:36} {statistics.median(base):12.2f} {statistics.median(probed):10.2f} {spread:9.2f}  "
                f"{verdict} (difference {diff:+.2f} ms)"
            )
    shutil.rmtree(scripts, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "probe.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
