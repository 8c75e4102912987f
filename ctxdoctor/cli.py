"""The command line: parse options, call the pipeline (``ctxdoctor.analysis``), hand the report
to a renderer, map errors to exit codes. No analysis and no report formatting happen here."""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager, nullcontext
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from typer.core import TyperArgument, TyperCommand

from ctxdoctor import __version__
from ctxdoctor.analysis import analyze_paths
from ctxdoctor.errors import CtxdoctorError, InputError, UsageError
from ctxdoctor.exitcodes import ExitCode
from ctxdoctor.findings import Report, Settings
from ctxdoctor.render import get_renderer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    # Plain help, as ruff and httpie print it: rich markup would eat "[tool.ctxdoctor]".
    rich_markup_mode=None,
    help="Find where your app loses OpenTelemetry context, and what to change.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

#: Dumps larger than this get a progress bar on a TTY.
_PROGRESS_BYTES = 64 << 20
#: Dumps with this many spans get a "diagnosing" status line on a TTY.
_STATUS_SPANS = 200_000


class _Command(TyperCommand):
    """Help that names arguments by their metavar (``DUMP...``) instead of typer's type labels
    (``{paths}...``, ``<list[Path]>``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                param.__class__ = _Argument


class _Argument(TyperArgument):
    def _usage_display_name(self) -> str:
        return self.metavar or self.name.upper() if self.name else ""

    def _rich_display_name(self) -> str:
        return self._usage_display_name()

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class _Format(str, Enum):
    terminal = "terminal"
    json = "json"
    junit = "junit"
    github = "github"


class _DumpFormatChoice(str, Enum):
    json = "json"
    proto = "proto"


class _Output:
    """How this invocation prints: ``--quiet`` and ``--no-color`` (``NO_COLOR`` is read by rich)."""

    quiet = False
    color = True


def _stdout() -> Console:
    return Console(highlight=False, quiet=_Output.quiet, color_system="auto" if _Output.color else None)


def _stderr() -> Console:
    # Errors and warnings are never silenced by --quiet: the exit code alone does not say why.
    return Console(stderr=True, highlight=False, color_system="auto" if _Output.color else None)


def _set_output(quiet: bool, color: bool) -> None:
    _Output.quiet = quiet
    _Output.color = color


def _analyze(paths: list[Path], settings: Settings, jobs: int) -> Report:
    """The pipeline, with a progress bar and a status line when a person is watching a big dump."""
    console = _stderr()
    watched = console.is_terminal and not _Output.quiet

    def diagnosing(spans: int) -> AbstractContextManager[object]:
        if watched and spans >= _STATUS_SPANS:
            return console.status(f"diagnosing {spans:,} spans")
        return nullcontext()

    total = sum(p.stat().st_size for p in paths if p.is_file())
    if not watched or total < _PROGRESS_BYTES:
        return analyze_paths(paths, settings, jobs=jobs, diagnosing=diagnosing)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("reading", total=total)
        return analyze_paths(
            paths,
            settings,
            jobs=jobs,
            progress=lambda done, _t: bar.update(task, completed=done),
            diagnosing=diagnosing,
        )


def _emit(report: Report, renderer: str, output: Path | None) -> None:
    if output is None:
        get_renderer(renderer).render(report, _stdout())
        return
    try:
        with output.open("w", encoding="utf-8") as fh:
            get_renderer(renderer).render(report, Console(file=fh, width=100, no_color=True, highlight=False))
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None


def _check_ratio(value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise typer.BadParameter("must be between 0 and 1")
    return value


def _at_least(low: float, *, above: bool = False) -> Any:
    def check(value: float | None) -> float | None:
        if value is not None and (value <= low if above else value < low):
            raise typer.BadParameter(f"must be {'over' if above else 'at least'} {low:g}")
        return value

    return check


def _max_orphan_ratio(help: str) -> Any:
    return typer.Option(None, "--max-orphan-ratio", metavar="FLOAT", callback=_check_ratio, help=help)


_PathsArg = typer.Argument(
    ..., metavar="DUMP...", help="Dump files: OTLP/JSON lines (.json, .jsonl, .gz) or the Collector's proto format."
)
_MinConf = typer.Option(
    None,
    "--min-confidence",
    metavar="FLOAT",
    callback=_check_ratio,
    show_default=False,
    help="Report orphans at or above this confidence, 0 to 1 (default: 0.85).",
)
_ValuesOpt = typer.Option(
    None,
    "--attribute-values/--no-attribute-values",
    show_default=False,
    help="Read span attribute values, to link work to its dispatcher by a shared id "
    "(default: for dumps under 32 MB in all; reading them takes about twice as long).",
)
_ConfigOpt = typer.Option(
    None,
    "--config",
    metavar="FILE",
    help="Settings file (default: ctxdoctor.toml, or pyproject.toml with [tool.ctxdoctor], searched upwards).",
)
_JunitOpt = typer.Option(
    None, "--report-junit", metavar="FILE", help="Also write a JUnit XML report (one test case per gap)."
)
_JsonOpt = typer.Option(None, "--report-json", metavar="FILE", help="Also write the JSON report.")
_JobsOpt = typer.Option(
    0,
    "--jobs",
    "-j",
    metavar="N",
    callback=_at_least(0),
    show_default=False,
    help="Processes that read big dumps (over 32 MB in all) side by side: "
    "0, the default, is one per CPU (at most 8); 1 is one process (a little less memory).",
)
_FormatOpt = typer.Option(
    _Format.terminal,
    "--format",
    "-f",
    metavar="FORMAT",
    show_default=False,
    help="Report format: terminal (the default), json, junit or github.",
)
_OutputOpt = typer.Option(None, "--output", "-o", metavar="FILE", help="Write the report here instead of stdout.")
_QuietOpt = typer.Option(
    False, "--quiet", "-q", help="Print nothing but errors and warnings; the exit code tells the result."
)
_ColorOpt = typer.Option(
    True,
    "--color/--no-color",
    show_default=False,
    help="Colour the output (default: on a terminal, unless NO_COLOR is set).",
)
_OutputDumpOpt = typer.Option(
    Path("dump.json"),
    "--output",
    "-o",
    metavar="FILE",
    show_default=False,
    help="The dump to write (default: dump.json): OTLP/JSON lines, "
    "or the Collector's proto format if it ends in .pb or .binpb.",
)


def _settings(
    max_orphan_ratio: float | None, min_confidence: float | None, config: Path | None, values: bool | None
) -> Settings:
    from ctxdoctor.config import resolve_settings

    return resolve_settings(
        max_orphan_ratio=max_orphan_ratio, min_confidence=min_confidence, attribute_values=values, config=config
    )


def _publish(report: Report, junit: Path | None, json_path: Path | None, fmt: _Format, output: Path | None) -> None:
    from ctxdoctor.render.ci import publish

    # Annotations go where they cannot corrupt a machine-readable report on stdout, and only once.
    machine = output is None and fmt is not _Format.terminal
    to = None if fmt is _Format.github else sys.stderr if machine else sys.stdout
    publish(report, junit=junit, json_path=json_path, annotations_to=to)


def _report(
    paths: list[Path],
    settings: Settings,
    jobs: int,
    fmt: _Format,
    output: Path | None,
    junit: Path | None,
    json_path: Path | None,
    *,
    on_terminal: str,
) -> ExitCode:
    """The pipeline, then the report: ``on_terminal`` names the renderer for ``--format terminal``
    to stdout (the full report or the short summary)."""
    report = _analyze(paths, settings, jobs)
    _emit(report, on_terminal if fmt is _Format.terminal and output is None else fmt.value, output)
    _publish(report, junit, json_path, fmt, output)
    return ExitCode.GATE_FAILED if report.gate_failed else ExitCode.OK


@app.command(cls=_Command, short_help="Diagnose dumps: where context was lost, and the fix.")
def analyze(
    paths: list[Path] = _PathsArg,
    fmt: _Format = _FormatOpt,
    output: Path | None = _OutputOpt,
    min_confidence: float | None = _MinConf,
    attribute_values: bool | None = _ValuesOpt,
    max_orphan_ratio: float | None = _max_orphan_ratio("Also gate: exit 1 when the orphan ratio is over this."),
    config: Path | None = _ConfigOpt,
    report_junit: Path | None = _JunitOpt,
    report_json: Path | None = _JsonOpt,
    jobs: int = _JobsOpt,
    quiet: bool = _QuietOpt,
    color: bool = _ColorOpt,
) -> ExitCode:
    """Diagnose dumps: the roots that lost their context, the spans whose parent never arrived,
    and the change that fixes each."""
    _set_output(quiet, color)
    settings = _settings(max_orphan_ratio, min_confidence, config, attribute_values)
    return _report(paths, settings, jobs, fmt, output, report_junit, report_json, on_terminal="terminal")


@app.command(cls=_Command, short_help="CI gate: exit 1 when the orphan ratio is over a threshold.")
def check(
    paths: list[Path] = _PathsArg,
    max_orphan_ratio: float | None = _max_orphan_ratio(
        "Fail (exit 1) when the orphan ratio is over this (or max-orphan-ratio in the config file)."
    ),
    min_confidence: float | None = _MinConf,
    attribute_values: bool | None = _ValuesOpt,
    fmt: _Format = _FormatOpt,
    output: Path | None = _OutputOpt,
    config: Path | None = _ConfigOpt,
    report_junit: Path | None = _JunitOpt,
    report_json: Path | None = _JsonOpt,
    jobs: int = _JobsOpt,
    quiet: bool = _QuietOpt,
    color: bool = _ColorOpt,
) -> ExitCode:
    """CI gate: print a short summary, and exit 1 when the orphan ratio is over the threshold.

    --format terminal, the default, prints the summary; the other formats the full report."""
    _set_output(quiet, color)
    settings = _settings(max_orphan_ratio, min_confidence, config, attribute_values)
    if settings.max_orphan_ratio is None:
        raise UsageError("check needs a threshold: --max-orphan-ratio, or max-orphan-ratio in the config file")
    return _report(paths, settings, jobs, fmt, output, report_junit, report_json, on_terminal="summary")


@app.command(
    "run",
    cls=_Command,
    context_settings={"allow_interspersed_args": False},
    short_help="Run a command with its traces sent to ctxdoctor, then diagnose and gate.",
)
def run_command(
    command: list[str] = typer.Argument(
        ..., metavar="-- COMMAND...", help="The command to run, after --; its exit code is passed on."
    ),
    max_orphan_ratio: float | None = _max_orphan_ratio("Exit 1 when the orphan ratio is over this."),
    min_confidence: float | None = _MinConf,
    attribute_values: bool | None = _ValuesOpt,
    output: Path = _OutputDumpOpt,
    config: Path | None = _ConfigOpt,
    report_junit: Path | None = _JunitOpt,
    report_json: Path | None = _JsonOpt,
    jobs: int = _JobsOpt,
    keep_endpoint: bool = typer.Option(
        False, "--keep-endpoint", help="Do not set OTEL_EXPORTER_OTLP_TRACES_ENDPOINT/_INSECURE for the command."
    ),
    port: int = typer.Option(
        0,
        "--port",
        metavar="PORT",
        show_default=False,
        help="Port for the receiver, gRPC and HTTP on one port (default: a free one).",
    ),
    zipkin_port: int = typer.Option(
        0,
        "--zipkin-port",
        metavar="PORT",
        show_default=False,
        help="Port for Zipkin v2 JSON, POST /api/v2/spans (default: a free one).",
    ),
    drain: float = typer.Option(
        10.0,
        "--drain",
        metavar="SECONDS",
        callback=_at_least(0),
        help="After the command exits, wait at most this long for its last exports.",
    ),
    quiet: bool = _QuietOpt,
    color: bool = _ColorOpt,
    no_probe: bool = typer.Option(
        False, "--no-probe", help="Do not load the probe into the command (NODE_OPTIONS/PYTHONPATH left as they are)."
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Let the probe say on stderr what it could not watch."),
) -> int:
    """Run COMMAND with its traces sent to ctxdoctor, then diagnose them and gate.

    Exit code: the command's own if it failed, else 1 if the gate failed, else 0.
    """
    _set_output(quiet, color)
    environ = dict(os.environ)  # the command gets the user's environment, not ctxdoctor's tweaks
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from ctxdoctor.runner.session import RunOptions
    from ctxdoctor.runner.session import run as run_session

    settings = _settings(max_orphan_ratio, min_confidence, config, attribute_values)
    opts = RunOptions(
        command=command,
        settings=settings,
        output=output,
        junit=report_junit,
        json_path=report_json,
        keep_endpoint=keep_endpoint,
        port=port,
        zipkin_port=zipkin_port,
        drain=drain,
        probe=not no_probe,
        verbose=verbose,
        jobs=jobs,
        quiet=quiet,
    )
    return run_session(opts, console=_stdout(), err=_stderr(), environ=environ)


@app.command(cls=_Command, short_help="Receive spans over OTLP from running apps, then diagnose them.")
def listen(
    host: str = typer.Option(
        "127.0.0.1", "--host", metavar="ADDRESS", help="Address to bind (0.0.0.0 for containers)."
    ),
    port: int = typer.Option(4317, "--port", metavar="PORT", help="OTLP/gRPC port (Python exporters' default)."),
    http_port: int = typer.Option(
        4318, "--http-port", metavar="PORT", help="OTLP/HTTP port (Node.js exporters' default)."
    ),
    zipkin_port: int | None = typer.Option(
        None,
        "--zipkin-port",
        metavar="PORT",
        show_default=False,
        help="Zipkin v2 JSON port, POST /api/v2/spans (default: 9411, skipped with a notice when it is taken).",
    ),
    output: Path = _OutputDumpOpt,
    dump_format: _DumpFormatChoice | None = typer.Option(
        None,
        "--dump-format",
        metavar="FORMAT",
        help="json: OTLP/JSON lines, written behind the receiver (it can fall behind under heavy load). "
        "proto: length-prefixed protobuf, complete as soon as a request is acknowledged, at any rate. "
        "Default: from the --output suffix.",
    ),
    duration: float | None = typer.Option(
        None, "--duration", metavar="SECONDS", callback=_at_least(0), help="Stop after this many seconds."
    ),
    max_spans: int | None = typer.Option(
        None, "--max-spans", metavar="N", callback=_at_least(1), help="Stop after this many spans."
    ),
    max_message_mib: float = typer.Option(
        64.0,
        "--max-message-mib",
        metavar="MIB",
        callback=_at_least(0, above=True),
        help="Largest request accepted, after decompression.",
    ),
    min_confidence: float | None = _MinConf,
    attribute_values: bool | None = _ValuesOpt,
    config: Path | None = _ConfigOpt,
    report_junit: Path | None = _JunitOpt,
    report_json: Path | None = _JsonOpt,
    jobs: int = _JobsOpt,
    quiet: bool = _QuietOpt,
    color: bool = _ColorOpt,
    force: bool = typer.Option(False, "--force", help="Replace the dump if it exists (else: refuse, exit 2)."),
) -> ExitCode:
    """Receive spans from running apps over OTLP (gRPC and HTTP), then diagnose what arrived."""
    _set_output(quiet, color)
    # grpc-core prints its own log lines (a busy port, a stray client) unless told not to before
    # it is imported; ctxdoctor reports those conditions itself, in one line each.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from ctxdoctor.receiver.command import listen as run_listen

    return run_listen(
        host=host,
        port=port,
        http_port=http_port,
        zipkin_port=zipkin_port,
        output=output,
        duration=duration,
        max_spans=max_spans,
        max_message_mib=max_message_mib,
        dump_format=dump_format.value if dump_format is not None else None,
        settings=_settings(None, min_confidence, config, attribute_values),
        jobs=jobs,
        junit=report_junit,
        json_path=report_json,
        force=force,
        console=_stdout(),
        err=_stderr(),
    )


@app.command(cls=_Command, short_help="Turn a proto dump into OTLP/JSON lines.")
def convert(
    source: Path = typer.Argument(
        ...,
        metavar="DUMP",
        help="A dump in the Collector's proto format (listen -o dump.pb), a journal, or Jaeger, Zipkin or Tempo JSON.",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        metavar="FILE",
        help="The OTLP/JSON lines to write (default: the source with .json for .pb and .binpb).",
    ),
    quiet: bool = _QuietOpt,
    color: bool = _ColorOpt,
) -> ExitCode:
    """Turn a proto dump, or another system's JSON, into OTLP/JSON lines (for jq, or the Collector)."""
    _set_output(quiet, color)
    from ctxdoctor.readers import reader_of
    from ctxdoctor.readers.documents import DocumentReader, write_otlp_json
    from ctxdoctor.receiver.convert import convert_file
    from ctxdoctor.receiver.receiver import PROTO_SUFFIXES

    if output is None:
        if source.suffix.lower() not in PROTO_SUFFIXES:
            raise UsageError(f"name the JSON file to write with --output (the source {source} does not end in .pb)")
        output = source.with_suffix(".json")
    if output.resolve() == source.resolve():
        raise UsageError(f"--output {output} is the source itself")
    if source.is_file():
        try:
            reader = reader_of(source)
        except InputError:
            reader = None  # the proto converter says what is wrong with it
        if isinstance(reader, DocumentReader):
            requests, spans = write_otlp_json(reader, source, output)
            _stderr().print(
                f"converted {requests} requests ({spans} spans) from {source} ({reader.title}) to {output}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            return ExitCode.OK
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
    if not _Output.quiet:
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
