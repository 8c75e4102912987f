"""``ctxdoctor run -- COMMAND``: receiver, command, final exports, diagnosis, exit code.

The exit code is the command's own when it failed (so wrapping a test suite never hides its
failure), else 1 when the gate failed, else 0. A command killed by signal N gives 128 + N, as a
shell reports it; an interrupted run whose command still exited 0 gives 128 + the signal, so a
cancelled CI job is never mistaken for a passing gate.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from rich.console import Console

from ctxdoctor.errors import InputError, UsageError
from ctxdoctor.exitcodes import ExitCode
from ctxdoctor.findings import Report, Settings
from ctxdoctor.probe.facts import SeenProcess
from ctxdoctor.render import status
from ctxdoctor.render.ci import publish
from ctxdoctor.runner.env import EnvPlan, child_env
from ctxdoctor.runner.mux import PortMux
from ctxdoctor.runner.process import Command, CommandNotFound, Outcome

if TYPE_CHECKING:
    from ctxdoctor.runner.ptree import ProcessSampler

HOST = "127.0.0.1"
#: Exports are over once none has arrived for this long (after the command exited).
QUIET_S = 0.5
NOT_FOUND = 127
NOT_EXECUTABLE = 126


@dataclass
class RunOptions:
    command: list[str]
    settings: Settings
    output: Path = Path("dump.json")
    junit: Path | None = None
    json_path: Path | None = None
    keep_endpoint: bool = False
    port: int = 0
    #: Zipkin v2 JSON's port (0: a free one); the command is told it in OTEL_EXPORTER_ZIPKIN_ENDPOINT.
    zipkin_port: int = 0
    #: After the command exits: how long to wait, at most, for its leftover processes and exports.
    drain: float = 10.0
    #: Load the probe into the command (see runner/probe.py); ``--no-probe`` turns it off.
    probe: bool = True
    verbose: bool = False
    #: Reading processes for a big dump (0: one per CPU).
    jobs: int = 0
    #: Only warnings and errors on stderr (``--quiet``); the report is not printed either.
    quiet: bool = False


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(outcome: Outcome | None, start_error: int | None, report: Report | None) -> int:
    if start_error is not None:
        return start_error
    assert outcome is not None
    if outcome.returncode != 0:
        return outcome.returncode
    if outcome.received:
        return 128 + outcome.received[0]
    if report is not None and report.gate_failed:
        return int(ExitCode.GATE_FAILED)
    return int(ExitCode.OK)


def _protocols(connections: Mapping[str, set[str]]) -> dict[str, int]:
    """Exporter connections per protocol ("grpc", "http/protobuf", "http/json")."""
    seen = {c for conns in connections.values() for c in conns}
    return dict(sorted(Counter(c.split(" ", 1)[0] for c in seen).items()))


def run(
    opts: RunOptions,
    *,
    console: Console,
    err: Console,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the command against a fresh receiver and diagnose what it exported."""
    from ctxdoctor.receiver import DumpWriteError, PortInUse, Receiver
    from ctxdoctor.receiver.receiver import dump_format_for

    if not opts.command:
        raise UsageError("nothing to run: put the command after --, e.g. ctxdoctor run -- npm test")
    if not 0 <= opts.port <= 65535:
        raise UsageError(f"--port {opts.port} is not a TCP port (0-65535)")
    if not 0 <= opts.zipkin_port <= 65535:
        raise UsageError(f"--zipkin-port {opts.zipkin_port} is not a TCP port (0-65535)")
    parent_env = dict(os.environ if environ is None else environ)

    def log(message: str) -> None:
        err.print(f"ctxdoctor run: {message}", markup=False, highlight=False, soft_wrap=True)

    receiver = Receiver(
        output=opts.output,
        host=HOST,
        grpc_port=0,
        http_port=0,
        zipkin_port=opts.zipkin_port,
        receipts=False,
        log=log,
        dump_format=dump_format_for(opts.output),
    )
    # The command's port is bound before the receiver opens anything: a busy port then fails the
    # run without touching the dump an earlier run left. Its targets are set once they exist.
    try:
        mux = PortMux(HOST, 0, 0, port=opts.port, log=log)
    except OSError as exc:
        raise UsageError(f"cannot listen on {HOST}:{opts.port}: {exc.strerror or exc}") from None
    try:
        receiver.start()
    except (PortInUse, DumpWriteError) as exc:
        mux.close()
        raise UsageError(str(exc)) from None
    outcome: Outcome | None = None
    start_error: int | None = None
    processes: tuple[SeenProcess, ...] = ()
    started = time.monotonic()
    try:
        assert receiver.grpc_port is not None and receiver.http_port is not None
        mux.grpc_port, mux.http_port = receiver.grpc_port, receiver.http_port
        mux.start()
        plan = child_env(parent_env, HOST, mux.port, keep_endpoint=opts.keep_endpoint, zipkin_port=receiver.zipkin_port)
        facts = _start_probe(plan.env, opts, log)
        _banner(plan, mux.port, receiver.zipkin_port, opts, log)
        cmd = Command(opts.command, plan.env)
        cmd.install_handlers()
        try:
            try:
                cmd.start()
            except CommandNotFound as exc:
                log(str(exc))
                start_error = NOT_FOUND if "not found" in str(exc) else NOT_EXECUTABLE
            else:
                sampler = _sample_tree(cmd, facts)
                outcome = cmd.wait()
                _drain(cmd, receiver, opts.drain, log)
                if sampler is not None:
                    processes = sampler.stop()
        finally:
            cmd.restore_handlers()
    finally:
        mux.stop_accepting()
        receiver.stop()
        mux.close()
    elapsed = time.monotonic() - started
    stats = receiver.stats
    protocols = _protocols(stats.connections)
    if outcome is not None and not opts.quiet:
        how = status.command_how(
            _signal_name(outcome.signal) if outcome.signal is not None else None,
            outcome.returncode,
            [_signal_name(s) for s in outcome.received],
        )
        log(status.command_ended(how, outcome.duration, stats.spans, stats.requests, protocols, opts.output))
    if start_error is not None:
        return start_error
    if stats.spans == 0:
        log(status.RUN_NO_SPANS)
    if not receiver.dump_complete:
        log(status.dump_incomplete(receiver.result_path))
    report = _analyse(receiver.result_path, opts, console, facts, processes)
    extra = {
        "run": {
            "program": os.path.basename(opts.command[0]),
            "exit_code": outcome.returncode if outcome else None,
            "killed_by": _signal_name(outcome.signal) if outcome and outcome.signal else None,
            "signals_passed_on": [_signal_name(s) for s in outcome.received] if outcome else [],
            "duration_s": round(outcome.duration, 3) if outcome else None,
            "spans_received": stats.spans,
            "requests": stats.requests,
            "connections": protocols,
            "dump": str(receiver.result_path),
            "env_set": plan.set,
            "env_replaced": plan.replaced,
            "probe": str(facts) if facts is not None else None,
        }
    }
    summary_extra = []
    if outcome is not None and outcome.returncode != 0:
        summary_extra.append(status.command_failed_note(os.path.basename(opts.command[0]), outcome.returncode))
    publish(
        report,
        junit=opts.junit,
        json_path=opts.json_path,
        annotations_to=console.file,
        extra_json=extra,
        summary_heading=f"ctxdoctor run: {os.path.basename(opts.command[0])}",
        summary_extra=summary_extra,
        elapsed=elapsed,
        environ=parent_env,
    )
    return exit_code(outcome, start_error, report)


def _banner(plan: EnvPlan, port: int, zipkin_port: int | None, opts: RunOptions, log: Any) -> None:
    if not opts.quiet:
        log(status.run_banner(HOST, port, zipkin_port, opts.output))
    for name, value in plan.set.items():
        if name in plan.replaced or not opts.quiet:
            log(status.env_set(name, value, replaced=name in plan.replaced))
    for note in plan.notes:
        log(status.note(note))


def _drain(cmd: Command, receiver: Any, bound: float, log: Any) -> None:
    """Wait for what the command still sends: leftover processes of its group, then quiet.

    Bounded by ``bound`` seconds; a signal received now ends the wait at once.
    """
    deadline = time.monotonic() + bound
    signals_at_exit = len(cmd.received)

    def interrupted() -> bool:
        return len(cmd.received) > signals_at_exit

    while cmd.group_alive() and time.monotonic() < deadline and not interrupted():
        time.sleep(0.05)
    if cmd.group_alive() and not interrupted():
        log(status.still_running(bound))
    while not interrupted():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log(status.EXPORTS_STILL_ARRIVING)
            return
        if receiver.wait_idle(QUIET_S, timeout=min(0.25, remaining)):
            return


def _start_probe(env: dict[str, str], opts: RunOptions, log: Any) -> Path | None:
    """Load the probe into the command's environment; its facts go next to the dump."""
    if not opts.probe:
        return None
    from ctxdoctor.runner.probe import add_probe, facts_path

    facts = facts_path(opts.output)
    try:
        facts.parent.mkdir(parents=True, exist_ok=True)
        facts.write_bytes(b"")  # this run's facts only
    except OSError as exc:
        log(status.probe_off(facts, str(exc.strerror or exc)))
        return None
    add_probe(env, facts, verbose=opts.verbose)
    log(status.probe_loaded(facts))
    return facts


def _sample_tree(cmd: Command, facts: Path | None) -> ProcessSampler | None:
    """With the probe on, also watch the command's process tree (lifetimes of silent processes)."""
    proc = getattr(cmd, "proc", None)
    if facts is None or proc is None:
        return None
    from ctxdoctor.runner.ptree import ProcessSampler

    return ProcessSampler(proc.pid).start()


def _observe(report: Report, path: Path, facts_file: Path | None, processes: tuple[SeenProcess, ...]) -> Report:
    """Apply what the probe saw; the statistical report stands alone when it saw nothing."""
    from ctxdoctor.diagnose.observed import apply_observations
    from ctxdoctor.probe.facts import read_facts
    from ctxdoctor.readers import read_paths

    facts = read_facts(facts_file) if facts_file is not None else None
    if facts is None or not facts.units:
        return report
    facts = msgspec.structs.replace(facts, processes=processes)
    spans = read_paths([path]).spans if report.summary.spans else []
    return apply_observations(report, spans, facts)


def _analyse(
    path: Path,
    opts: RunOptions,
    console: Console,
    facts: Path | None = None,
    processes: tuple[SeenProcess, ...] = (),
) -> Report:
    from ctxdoctor.analysis import analyze_paths
    from ctxdoctor.render import get_renderer

    try:
        # This process has run a gRPC server: a dump big enough to read in parallel is read in a
        # fresh interpreter (see ctxdoctor.analysis).
        report = analyze_paths([path], opts.settings, jobs=opts.jobs, fresh_process=True)
        report = _observe(report, path, facts, processes)
    except InputError as exc:  # the receiver wrote it: this would be a bug, but say what broke
        raise InputError(path, f"cannot read back the run's dump: {exc.message}") from None
    # An empty dump is the run's own finding (no spans arrived), said elsewhere in plainer words.
    report = msgspec.structs.replace(report, warnings=tuple(w for w in report.warnings if "file is empty" not in w))
    console.print()
    get_renderer("terminal").render(report, console)
    return report
