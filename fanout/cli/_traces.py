"""``fanout traces``: read a traces directory (summary, list, one request, OTLP export)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fanout.cli._common import bad_input_exits, fail, group
from fanout.cli._progress import make_console
from fanout.errors import ConfigError

__all__ = ["commands"]

commands = group("Read a traces directory: summaries, the requests, one timeline, export.")

TRACE_EXPORT_FORMATS = ("otlp-json",)
_READING = "reading traces"

TracesDirArg = Annotated[
    Path,
    typer.Argument(
        help="A traces directory: the one a job wrote its trace files to.",
        metavar="DIR",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _need_duckdb() -> None:
    from fanout._extras import require

    require(f"fanout traces ({_READING} with SQL)", "duckdb", extra="traces")


@commands.command("summary", short_help="Calls, errors, latency, tokens, cost per model.")
def traces_summary(directory: TracesDirArg, as_json: JsonOpt = False) -> None:
    """Calls, errors, 429s, retries, latency, tokens and cost per model, node and job.

    Reads the Parquet parts and the open log segments, so a running or crashed
    job shows as far as it got.
    """
    from fanout.cli._trace_view import print_trace_summary

    with bad_input_exits():
        _need_duckdb()
        from fanout.trace import summarize

        summary = summarize(directory)
    print_trace_summary(make_console(), summary, as_json=as_json)


@commands.command("list", short_help="The requests (trace ids), newest first.")
def traces_list(
    directory: TracesDirArg,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many, newest first.")] = 20,
    status: Annotated[
        str | None,
        typer.Option(help="Only requests that ended so: ok, error, unfinished, ...."),
    ] = None,
    job: Annotated[str | None, typer.Option(help="Only this job's requests.")] = None,
    key: Annotated[str | None, typer.Option(help="Only the request of this record key.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The requests (trace ids) with status, start, duration, calls, cost and record key.

    Newest first; `fanout traces show DIR TRACE_ID` prints one of them.
    """
    from fanout.cli._trace_view import print_trace_list

    with bad_input_exits():
        _need_duckdb()
        from fanout.trace import list_traces

        listing = list_traces(directory, limit=limit, status=status, job=job, key=key)
    print_trace_list(make_console(), listing, str(directory), as_json=as_json)


@commands.command("show")
def traces_show(
    directory: TracesDirArg,
    trace_id: Annotated[
        str,
        typer.Argument(
            help="A trace id, or a unique prefix of 6+ characters (see `fanout traces list`).",
            show_default=False,
        ),
    ],
) -> None:
    """One request as an indented timeline: run, nodes, attempts."""
    from fanout.cli._trace_view import print_trace_tree

    with bad_input_exits():
        _need_duckdb()
        from fanout.trace import trace_tree

        rows = trace_tree(directory, trace_id)
    print_trace_tree(make_console(), rows)


@commands.command("export", short_help="Export the spans as OTLP/JSON lines.")
def traces_export(
    directory: TracesDirArg,
    export_format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help=f"Output format: {', '.join(TRACE_EXPORT_FORMATS)}.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="File to write.", show_default="stdout", dir_okay=False
        ),
    ] = None,
) -> None:
    """Export every span for an OpenTelemetry collector (OTLP/JSON lines).

    otlp-json: one ExportTraceServiceRequest per line (the collector's file
    exporter format), with gen_ai.* and OpenInference attributes.
    """
    if export_format not in TRACE_EXPORT_FORMATS:
        formats = ", ".join(TRACE_EXPORT_FORMATS)
        fail(f"unknown --format {export_format!r}: choose one of {formats}")
    with bad_input_exits():
        _need_duckdb()
        from fanout.trace import export_otlp

        if output is None:
            try:
                export_otlp(directory, sys.stdout)
                sys.stdout.flush()
            except BrokenPipeError:  # `| head`: the reader has all it wanted
                _quiet_stdout()
            return
        partial = output.with_name(output.name + ".partial")
        try:  # a whole file or none: a failed export leaves no half file behind
            with partial.open("w", encoding="utf-8") as out:
                count = export_otlp(directory, out)
            partial.replace(output)
        except OSError as exc:
            raise ConfigError(f"cannot write {str(output)!r}: {exc.strerror}") from None
        finally:
            partial.unlink(missing_ok=True)
    typer.echo(f"exported {count:,} spans to {output}", err=True)


def _quiet_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that cannot fail.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (a test runner's buffer)
        pass
    finally:
        os.close(devnull)
