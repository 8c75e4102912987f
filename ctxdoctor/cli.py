"""The command line: parse options, wire readers -> diagnosis -> renderers, map errors to exit
codes. No analysis happens here."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

from ctxdoctor import __version__
from ctxdoctor.diagnose import diagnose
from ctxdoctor.errors import CtxdoctorError, InputError, UsageError
from ctxdoctor.exitcodes import ExitCode
from ctxdoctor.findings import Report, Settings
from ctxdoctor.readers import Dump, read_paths
from ctxdoctor.render import get_renderer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find where your app loses OpenTelemetry context, and what to change.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Dumps larger than this get a progress bar on a TTY.
_PROGRESS_BYTES = 64 << 20
#: Dumps with this many spans get a "diagnosing" status line on a TTY.
_STATUS_SPANS = 200_000


class Format(str, Enum):
    terminal = "terminal"
    json = "json"
    junit = "junit"
    github = "github"


class DumpFormatChoice(str, Enum):
    json = "json"
    proto = "proto"


def _stdout() -> Console:
    return Console(highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def load(paths: list[Path], console: Console, jobs: int = 1) -> Dump:
    total = sum(p.stat().st_size for p in paths if p.is_file())
    if not console.is_terminal or total < _PROGRESS_BYTES:
        return read_paths(paths, jobs=jobs)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("reading", total=total)
        return read_paths(paths, progress=lambda done, _t: bar.update(task, completed=done), jobs=jobs)


def analyse(paths: list[Path], settings: Settings, console: Console, jobs: int = 1) -> Report:
    dump = load(paths, console, jobs)
    warnings = [str(w) for w in dump.warnings]
    if console.is_terminal and len(dump.spans) >= _STATUS_SPANS:
        with console.status(f"diagnosing {len(dump.spans):,} spans"):
            return diagnose(dump.spans, settings, warnings=warnings, files=dump.files)
    return diagnose(dump.spans, settings, warnings=warnings, files=dump.files)


def emit(report: Report, fmt: Format, output: Path | None) -> None:
    renderer = get_renderer(fmt.value)
    if output is None:
        renderer.render(report, _stdout())
        return
    try:
        with output.open("w", encoding="utf-8") as fh:
            renderer.render(report, Console(file=fh, width=100, no_color=True, highlight=False))
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None


PathsArg = typer.Argument(..., help="Dump files: OTLP/JSON lines (.json, .jsonl, .gz) or Collector proto format.")
MinConf = typer.Option(
    None, "--min-confidence", min=0.0, max=1.0, help="Report orphans at or above this confidence [default: 0.5]."
)
ConfigOpt = typer.Option(
    None,
    "--config",
    help="Settings file (default: ctxdoctor.toml or pyproject.toml [tool.ctxdoctor], searched upwards).",
)
JunitOpt = typer.Option(None, "--report-junit", help="Also write a JUnit XML report (one test case per gap).")
JsonOpt = typer.Option(None, "--report-json", help="Also write the JSON report.")
JobsOpt = typer.Option(
    0,
    "--jobs",
    "-j",
    min=0,
    help="Processes that read big dumps (over 32 MB in all) side by side; "
    "0 = one per CPU (at most 8), 1 = one process (a little less memory).",
)


def _jobs(jobs: int) -> int:
    from ctxdoctor.forked import usable_cpus

    return jobs or min(usable_cpus(), 8)


def _settings(max_orphan_ratio: float | None, min_confidence: float | None, config: Path | None) -> Settings:
    from ctxdoctor.config import resolve_settings

    return resolve_settings(max_orphan_ratio=max_orphan_ratio, min_confidence=min_confidence, config=config)


def _publish(report: Report, junit: Path | None, json_path: Path | None, fmt: Format, output: Path | None) -> None:
    from ctxdoctor.runner.publish import publish

    # Annotations go where they cannot corrupt a machine-readable report on stdout, and only once.
    machine = output is None and fmt is not Format.terminal
    to = None if fmt is Format.github else sys.stderr if machine else sys.stdout
    publish(report, junit=junit, json_path=json_path, annotations_to=to)


def _check_ratio(value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise typer.BadParameter("must be between 0 and 1")
    return value


@app.command()
def analyze(
    paths: list[Path] = PathsArg,
    fmt: Format = typer.Option(Format.terminal, "--format", "-f", help="Report format."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the report here instead of stdout."),
    min_confidence: float | None = MinConf,
    max_orphan_ratio: float | None = typer.Option(
        None, "--max-orphan-ratio", callback=_check_ratio, help="Also gate: exit 1 when the orphan ratio is over this."
    ),
    config: Path | None = ConfigOpt,
    report_junit: Path | None = JunitOpt,
    report_json: Path | None = JsonOpt,
    jobs: int = JobsOpt,
) -> ExitCode:
    """Diagnose a dump: context-loss roots, spans whose parent never arrived, and the fixes."""
    settings = _settings(max_orphan_ratio, min_confidence, config)
    report = analyse(paths, settings, _stderr(), _jobs(jobs))
    emit(report, fmt, output)
    _publish(report, report_junit, report_json, fmt, output)
    return ExitCode.GATE_FAILED if report.gate_failed else ExitCode.OK


@app.command()
def check(
    paths: list[Path] = PathsArg,
    max_orphan_ratio: float | None = typer.Option(
        None,
        "--max-orphan-ratio",
        callback=_check_ratio,
        help="Fail (exit 1) when the orphan ratio is over this (or max-orphan-ratio in the config file).",
    ),
    min_confidence: float | None = MinConf,
    fmt: Format = typer.Option(Format.terminal, "--format", "-f", help="Summary format."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the report here instead of stdout."),
    config: Path | None = ConfigOpt,
    report_junit: Path | None = JunitOpt,
    report_json: Path | None = JsonOpt,
    jobs: int = JobsOpt,
) -> ExitCode:
    """CI gate: print the summary and exit 1 when the orphan ratio is over the threshold."""
    from ctxdoctor.render.terminal import summary_text

    settings = _settings(max_orphan_ratio, min_confidence, config)
    if settings.max_orphan_ratio is None:
        raise UsageError("check needs a threshold: --max-orphan-ratio, or max-orphan-ratio in the config file")
    report = analyse(paths, settings, _stderr(), _jobs(jobs))
    if fmt is Format.terminal and output is None:
        console = _stdout()
        for w in report.warnings:
            console.print(f"warning: {w}", style="yellow")
        console.print(summary_text(report))
        for g in report.gaps:
            console.print(
                f"  gap: {g.service}: {g.parent_name} -> {g.orphan_name} ({g.boundary.value}, {g.occurrences}x)"
            )
    else:
        emit(report, fmt, output)
    _publish(report, report_junit, report_json, fmt, output)
    return ExitCode.GATE_FAILED if report.gate_failed else ExitCode.OK


@app.command("run", context_settings={"allow_interspersed_args": False})
def run_command(
    command: list[str] = typer.Argument(..., help="The command to run, after --; its exit code is passed on."),
    max_orphan_ratio: float | None = typer.Option(
        None, "--max-orphan-ratio", callback=_check_ratio, help="Exit 1 when the orphan ratio is over this."
    ),
    min_confidence: float | None = MinConf,
    output: Path = typer.Option(
        Path("dump.json"),
        "--output",
        "-o",
        help="The dump to write: OTLP/JSON lines, or the Collector's proto format if it ends in .pb or .binpb.",
    ),
    config: Path | None = ConfigOpt,
    report_junit: Path | None = JunitOpt,
    report_json: Path | None = JsonOpt,
    keep_endpoint: bool = typer.Option(
        False, "--keep-endpoint", help="Do not set OTEL_EXPORTER_OTLP_TRACES_ENDPOINT/_INSECURE for the command."
    ),
    port: int = typer.Option(0, "--port", help="Port for the receiver (gRPC and HTTP on one port; 0 = a free one)."),
    drain: float = typer.Option(
        10.0, "--drain", min=0.0, help="After the command exits, wait at most this long for its last exports."
    ),
    no_probe: bool = typer.Option(
        False, "--no-probe", help="Do not load the probe into the command (NODE_OPTIONS/PYTHONPATH left as they are)."
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Let the probe say on stderr what it could not watch."),
) -> int:
    """Run COMMAND with its traces sent to ctxdoctor, then diagnose them and gate.

    Exit code: the command's own if it failed, else 1 if the gate failed, else 0.
    """
    import os

    environ = dict(os.environ)  # the command gets the user's environment, not ctxdoctor's tweaks
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from ctxdoctor.runner.session import RunOptions
    from ctxdoctor.runner.session import run as run_session

    settings = _settings(max_orphan_ratio, min_confidence, config)
    opts = RunOptions(
        command=command,
        settings=settings,
        output=output,
        junit=report_junit,
        json_path=report_json,
        keep_endpoint=keep_endpoint,
        port=port,
        drain=drain,
        probe=not no_probe,
        verbose=verbose,
    )
    return run_session(opts, console=_stdout(), err=_stderr(), environ=environ)


@app.command()
def listen(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 for containers)."),
    port: int = typer.Option(4317, "--port", help="OTLP/gRPC port (Python exporters' default)."),
    http_port: int = typer.Option(4318, "--http-port", help="OTLP/HTTP port (Node.js exporters' default)."),
    output: Path = typer.Option(
        Path("dump.json"),
        "--output",
        "-o",
        help="The dump to write: OTLP/JSON lines, or the Collector's proto format if it ends in .pb or .binpb.",
    ),
    dump_format: DumpFormatChoice | None = typer.Option(
        None,
        "--dump-format",
        help="json: OTLP/JSON lines, written behind the receiver (it can fall behind under heavy load). "
        "proto: length-prefixed protobuf, complete as soon as a request is acknowledged, at any rate. "
        "Default: from the --output suffix.",
    ),
    duration: float | None = typer.Option(None, "--duration", min=0, help="Stop after this many seconds."),
    max_spans: int | None = typer.Option(None, "--max-spans", min=1, help="Stop after this many spans."),
    max_message_mib: float = typer.Option(
        64.0, "--max-message-mib", min=0.001, help="Largest request accepted, after decompression."
    ),
) -> ExitCode:
    """Receive spans from running apps over OTLP (gRPC and HTTP), then diagnose what arrived."""
    import os

    # grpc-core prints its own log lines (a busy port, a stray client) unless told not to before
    # it is imported; ctxdoctor reports those conditions itself, in one line each.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from ctxdoctor.receiver.command import listen as run_listen

    return run_listen(
        host=host,
        port=port,
        http_port=http_port,
        output=output,
        duration=duration,
        max_spans=max_spans,
        max_message_mib=max_message_mib,
        dump_format=dump_format.value if dump_format is not None else None,
        console=_stdout(),
        err=_stderr(),
    )


@app.command()
def convert(
    source: Path = typer.Argument(..., help="A dump in the Collector's proto format (listen -o dump.pb) or a journal."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="The OTLP/JSON lines to write [default: the source with .json for .pb/.binpb]."
    ),
) -> ExitCode:
    """Turn a proto dump into OTLP/JSON lines, exactly as listen writes them (for jq, or the Collector)."""
    from ctxdoctor.receiver.convert import convert_file
    from ctxdoctor.receiver.receiver import PROTO_SUFFIXES

    if output is None:
        if source.suffix.lower() not in PROTO_SUFFIXES:
            raise UsageError(f"name the JSON file to write with --output (the source {source} does not end in .pb)")
        output = source.with_suffix(".json")
    if output.resolve() == source.resolve():
        raise UsageError(f"--output {output} is the source itself")
    done = convert_file(source, output)
    err = _stderr()
    if done.truncated is not None:
        err.print(
            f"warning: {source} (byte offset {done.truncated}): last record is truncated (the writer was probably "
            "stopped mid-write); everything before it was converted",
            style="yellow",
            highlight=False,
            markup=False,
        )
    err.print(
        f"converted {done.requests} requests ({done.spans} spans) from {source} to {output}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    return ExitCode.OK


def _version(value: bool) -> None:
    if value:
        print(f"ctxdoctor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """ctxdoctor: find trace fragments caused by lost OpenTelemetry context."""


def run(argv: list[str] | None = None) -> ExitCode:
    """Run the CLI and map every error to its exit code, in one place."""
    err = _stderr()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="ctxdoctor", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
        return ExitCode(code) if code in ExitCode._value2member_map_ else ExitCode.USAGE
    except typer.Abort:
        err.print("aborted")
        return ExitCode.USAGE
    except InputError as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        return ExitCode.BAD_INPUT
    except (UsageError, CtxdoctorError) as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        return ExitCode.USAGE
    except typer.TyperException as exc:  # the command line itself was wrong
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {exc.format_message()}")
        return ExitCode.USAGE
    if isinstance(result, ExitCode):
        return result
    if isinstance(result, int) and not isinstance(result, bool) and 0 <= result <= 255:
        # ``run`` passes on the command's own exit code, which may be any of these.
        return result  # type: ignore[return-value]
    return ExitCode.OK


def main() -> None:
    code = int(run())
    # A million spans take a second to free one by one at interpreter exit, for nothing: the
    # process is ending. Flush what was written, then leave without the teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
