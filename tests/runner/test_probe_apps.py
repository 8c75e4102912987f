"""The probe inside real apps: it never changes them, chains what the user set, and reports.

Apps without OpenTelemetry (tests/apps/probe/plain_*) run once with and once without the probe:
the output and the exit code must be identical. The Python app runs on every CPython 3.10-3.13
found on the machine (the probe runs on the app's interpreter, not ctxdoctor's).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctxdoctor.probe import NODE_PROBE
from ctxdoctor.probe.facts import read_facts
from ctxdoctor.runner.probe import add_probe
from tests.runner.probe_runs import APPS, ROOT, clean_env

PROBE_APPS = ROOT / "tests" / "apps" / "probe"
USER_SITE = PROBE_APPS / "user_site"
HAS_NODE = shutil.which("node") is not None
HAS_NODE_SDK = HAS_NODE and (APPS / "node" / "node_modules" / "@opentelemetry" / "sdk-node").is_dir()
needs_node = pytest.mark.skipif(not HAS_NODE, reason="needs Node.js")


def _pythons() -> list[str]:
    """CPython 3.10-3.13 as installed here (pyenv or on PATH), plus the one running the tests."""
    found = {f"{sys.version_info.major}.{sys.version_info.minor}": sys.executable}
    for minor in (10, 11, 12, 13):
        version = f"3.{minor}"
        exe = shutil.which(f"python{version}")
        for base in sorted(Path("/root/.pyenv/versions").glob(f"{version}.*")) if Path("/root/.pyenv").is_dir() else []:
            exe = str(base / "bin" / "python")
        if exe and version not in found:
            found[version] = exe
    return [found[v] for v in sorted(found)]


def _run(argv: list[str], env: dict[str, str], cwd: Path = PROBE_APPS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _probed(env: dict[str, str], facts: Path) -> dict[str, str]:
    env = dict(env)
    add_probe(env, facts)
    return env


def _dispatches(facts: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in facts.read_text().splitlines() if '"ev":"dispatch"' in x]


@pytest.mark.parametrize("python", _pythons())
def test_a_python_app_runs_unchanged_and_its_dispatches_are_seen(python: str, tmp_path: Path) -> None:
    app = PROBE_APPS / "plain_python.py"
    env = clean_env(PYTHONPATH=str(USER_SITE), PLAIN_EXIT="4")
    plain = _run([python, str(app)], env)
    facts = tmp_path / "facts.jsonl"
    probed = _run([python, str(app)], _probed(env, facts))
    assert plain.returncode == 4 and plain.stdout.endswith("site loaded\n"), plain.stderr
    assert (probed.returncode, probed.stdout, probed.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    seen = {(d["api"], d["site"]["line"]) for d in _dispatches(facts) if d.get("task", True) and d["site"]}  # type: ignore[index]
    lines = app.read_text().splitlines()
    want = {
        ("threading.Thread.start", "t.start()"),
        ("ThreadPoolExecutor.map", "pool.map(square"),
        ("ThreadPoolExecutor.submit", "pool.submit(square"),
        ("multiprocessing.Pool.apply_async", "procs.apply_async("),
        ("multiprocessing.Process.start", "p.start()"),
    }
    for api, text in want:
        line = next(i for i, x in enumerate(lines, 1) if text in x)
        assert (api, line) in seen, (api, sorted(seen))
    parsed = read_facts(facts)
    assert parsed is not None and parsed.skipped_lines == 0
    assert not any(u.sdk for u in parsed.units)
    # The spawned children ran the probe too (it travels on PYTHONPATH).
    assert len({u.pid for u in parsed.units}) >= 3


@needs_node
@pytest.mark.parametrize("app", ["plain_node.mjs", "plain_node.cjs"])
def test_a_node_app_runs_unchanged_with_the_users_preload_chained(app: str, tmp_path: Path) -> None:
    preload = f"--require {PROBE_APPS / 'user_preload.cjs'}"
    env = clean_env(NODE_OPTIONS=preload, PLAIN_EXIT="3")
    plain = _run(["node", app], env)
    facts = tmp_path / "facts.jsonl"
    probed_env = _probed(env, facts)
    assert probed_env["NODE_OPTIONS"].endswith(preload) and str(NODE_PROBE) in probed_env["NODE_OPTIONS"]
    probed = _run(["node", app], probed_env)
    assert plain.returncode == 3 and "preload loaded" in plain.stdout, plain.stderr
    assert (probed.returncode, probed.stdout, probed.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    sites = {(d["api"], Path(d["site"]["file"]).name) for d in _dispatches(facts)}  # type: ignore[index]
    assert ("worker_threads.Worker", app) in sites
    assert any(api.startswith("child_process.") and f == app for api, f in sites)
    parsed = read_facts(facts)
    assert parsed is not None
    assert {u.tid for u in parsed.units if u.pid == min(u.pid for u in parsed.units)} >= {0, 1}
    assert len({u.pid for u in parsed.units}) == 2  # the child process ran the probe too


def _ctxdoctor_run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return _run(
        [
            sys.executable,
            "-m",
            "ctxdoctor",
            "run",
            "--report-json",
            str(tmp_path / "report.json"),
            "-o",
            str(tmp_path / "dump.json"),
            *args,
        ],
        clean_env(**env),
        cwd=ROOT,
    )


def test_run_reports_no_sdk_anywhere_and_passes_the_exit_code_on(tmp_path: Path) -> None:
    proc = _ctxdoctor_run(tmp_path, "--", sys.executable, str(PROBE_APPS / "plain_python.py"), PLAIN_EXIT="4")
    assert proc.returncode == 4, proc.stderr
    assert "procs 36; process 0; site none" in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    notes = report["observation"]["notes"]
    assert any(n.startswith("no SDK anywhere") for n in notes)
    assert report["silent_workers"] == []
    assert "no SDK anywhere" in proc.stdout


def test_no_probe_leaves_the_environment_alone(tmp_path: Path) -> None:
    show = (
        "import os, sys; "
        "print(os.environ.get('NODE_OPTIONS'), os.environ.get('PYTHONPATH'), '_ctxdoctor_probe' in sys.modules)"
    )
    proc = _ctxdoctor_run(tmp_path, "--no-probe", "--", sys.executable, "-c", show, NODE_OPTIONS="--no-warnings")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "--no-warnings None False"
    assert not (tmp_path / "dump.json.probe.jsonl").exists()
    assert json.loads((tmp_path / "report.json").read_text())["observation"] is None


@pytest.mark.skipif(not HAS_NODE_SDK, reason="needs Node.js and fixtures/apps/node/node_modules (make node)")
def test_the_seeds_worker_without_an_sdk_is_a_silent_worker(tmp_path: Path) -> None:
    app = PROBE_APPS / "seed_no_sdk.js"
    proc = _ctxdoctor_run(tmp_path, "--", "node", str(app), SEED_TASKS="2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("result 0\nresult 2\n")
    report = json.loads((tmp_path / "report.json").read_text())
    [silent] = report["silent_workers"]
    line = next(i for i, x in enumerate(app.read_text().splitlines(), 1) if "new Worker(" in x)
    assert silent["dispatch_site"]["file"] == str(app) and silent["dispatch_site"]["line"] == line
    assert (silent["api"], silent["workers"], silent["dispatches_with_span"]) == ("worker_threads.Worker", 2, 2)
    assert "SDK in every worker" in silent["fix"]["title"]
    assert "Silent worker" in proc.stdout and f"seed_no_sdk.js:{line}" in proc.stdout


def test_the_python_probe_stays_out_of_the_apps_spans(tmp_path: Path) -> None:
    """Under the probe the SDK's spans are the same spans: its processor only reads them."""
    code = (
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "import threading\n"
        "exp = InMemorySpanExporter(); p = TracerProvider(); p.add_span_processor(SimpleSpanProcessor(exp))\n"
        "t = p.get_tracer('t')\n"
        "with t.start_as_current_span('outer', attributes={'a': 1}):\n"
        "    th = threading.Thread(target=lambda: t.start_span('inner').end()); th.start(); th.join()\n"
        "spans = exp.get_finished_spans()\n"
        "print(sorted((s.name, dict(s.attributes), s.parent is None, len(s.events), len(s.links)) for s in spans))\n"
    )
    env = clean_env()
    facts = tmp_path / "facts.jsonl"
    plain = _run([sys.executable, "-c", code], env)
    probed = _run([sys.executable, "-c", code], _probed(env, facts))
    assert plain.returncode == 0, plain.stderr
    assert probed.stdout == plain.stdout and probed.stderr == plain.stderr
    starts = [json.loads(x) for x in facts.read_text().splitlines() if '"ev":"start"' in x]
    assert {s["name"] for s in starts} == {"outer", "inner"}
    inner = next(s for s in starts if s["name"] == "inner")
    assert inner["parent"] is None and inner["dispatch"] is not None


_BURST = """
const { Worker } = require('node:worker_threads');
const w = new Worker('setInterval(() => {}, 1000);', { eval: true });
for (let i = 0; i < 400; i++) w.postMessage({ i });
if (process.argv[2] === 'exit') process.exit(5);
if (process.argv[2] === 'throw') throw new Error('boom');
w.terminate();
"""


@needs_node
@pytest.mark.parametrize("end", ["exit", "throw", "normal"])
def test_node_facts_written_in_batches_survive_exit_and_an_uncaught_error(end: str, tmp_path: Path) -> None:
    """The Node.js probe writes a synchronous job's facts together: a process that ends inside that
    job (process.exit, an uncaught error) still leaves every fact, each line whole."""
    app = tmp_path / "burst.cjs"
    app.write_text(_BURST)
    facts = tmp_path / "facts.jsonl"
    proc = _run(["node", str(app), end], _probed(clean_env(), facts), cwd=tmp_path)
    assert proc.returncode == {"exit": 5, "throw": 1, "normal": 0}[end], proc.stderr
    posted = [d for d in _dispatches(facts) if d["api"] == "worker_threads.Worker.postMessage"]
    assert len(posted) == 400
    line = next(i for i, x in enumerate(_BURST.splitlines(), 1) if "w.postMessage" in x)
    assert {d["site"]["line"] for d in posted} == {line}  # type: ignore[index]
    parsed = read_facts(facts)
    assert parsed is not None and parsed.skipped_lines == 0
    main = next(u for u in parsed.units if u.main)
    assert main.exited


_BINDS = """
const path = require('node:path');
const { EventEmitter } = require('node:events');
const load = (n) => require(path.join(process.env.NODE_MODULES_DIR, n));
const api = load('@opentelemetry/api');
const { BasicTracerProvider } = load('@opentelemetry/sdk-trace-base');
const { AsyncLocalStorageContextManager } = load('@opentelemetry/context-async-hooks');
api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
api.trace.setGlobalTracerProvider(new BasicTracerProvider());
const tracer = api.trace.getTracer('t');
const bus = new EventEmitter();
const fn = () => {};
for (let i = 0; i < 3; i++) {
  tracer.startActiveSpan('request', (span) => {
    const req = new EventEmitter();
    api.context.bind(api.context.active(), req);
    req.on('data', fn);
    req.once('end', fn);
    bus.on('tick', fn);
    span.end();
  });
}
tracer.startActiveSpan('subscribe', (span) => {
  bus.on('order', api.context.bind(api.context.active(), fn));
  const timer = setInterval(fn, 1000);
  clearInterval(timer);
  span.end();
});
setInterval(fn, 1000).unref();
console.log(bus.listenerCount('order'), bus.listenerCount('tick'));
"""


@pytest.mark.skipif(not HAS_NODE_SDK, reason="needs Node.js and fixtures/apps/node/node_modules (make node)")
def test_node_notes_bound_listeners_and_intervals_in_a_span_and_nothing_else(tmp_path: Path) -> None:
    """A listener bound with context.bind and an interval set up inside a span are noted, at the
    app's line; an ordinary listener, an interval outside any span and the listeners of an emitter
    bound whole (what instrumentations do to every request's emitters) are not."""
    app = tmp_path / "binds.cjs"
    app.write_text(_BINDS)
    env = clean_env(NODE_MODULES_DIR=str(APPS / "node" / "node_modules"))
    plain = _run(["node", str(app)], env, cwd=tmp_path)
    facts = tmp_path / "facts.jsonl"
    probed = _run(["node", str(app)], _probed(env, facts), cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert (probed.returncode, probed.stdout, probed.stderr) == (plain.returncode, plain.stdout, "")
    registered = [json.loads(x) for x in facts.read_text().splitlines() if '"ev":"register"' in x]
    lines = _BINDS.splitlines()
    want = [
        ("EventEmitter.on", next(i for i, x in enumerate(lines, 1) if "bus.on('order'" in x), "order", True),
        ("setInterval", next(i for i, x in enumerate(lines, 1) if "const timer = setInterval" in x), "", False),
    ]
    got = [(r["api"], r["site"]["line"], r.get("event", ""), r["bound"]) for r in registered]
    assert got == want
    assert all(r["site"]["file"] == str(app) and r["span"] is not None for r in registered)
    parsed = read_facts(facts)
    assert parsed is not None and len(parsed.registrations) == 2
