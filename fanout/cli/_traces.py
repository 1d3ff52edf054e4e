"""``fanout traces``: read a traces directory (summary, list, one request, OTLP export)."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from fanout.cli._common import bad_input_exits, fail, group
from fanout.cli._progress import make_console
from fanout.errors import ConfigError

if TYPE_CHECKING:
    from fanout.trace import SpanFilter

__all__ = ["commands"]

commands = group("Read a traces directory: summaries, the requests, one timeline, export.")

TRACE_EXPORT_FORMATS = ("otlp-json", "otlp-proto")
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


@commands.command("export", short_help="Export spans as OTLP (JSON lines, protobuf, or POST).")
def traces_export(
    directory: TracesDirArg,
    export_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help=f"Output format: {', '.join(TRACE_EXPORT_FORMATS)} (default: otlp-json; "
            "otlp-proto with --endpoint).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="File to write.", show_default="stdout", dir_okay=False
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            help="POST the spans as OTLP protobuf to this URL (a collector's or backend's "
            "traces endpoint, e.g. http://localhost:6006/v1/traces); headers from "
            "OTEL_EXPORTER_OTLP_HEADERS.",
            show_default=False,
        ),
    ] = None,
    job: Annotated[str | None, typer.Option(help="Only this job's spans.")] = None,
    trace: Annotated[
        str | None, typer.Option(help="Only this trace (its id, or a prefix of it).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only spans started at or after this ISO time (UTC if no zone)."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only spans started before this ISO time.")
    ] = None,
) -> None:
    """Export spans for an OpenTelemetry collector or backend.

    otlp-json: one ExportTraceServiceRequest per line (the collector's file exporter
    format). otlp-proto: the same requests as protobuf, each preceded by its length (a
    varint). --endpoint sends them over OTLP/HTTP instead (protobuf: what Arize Phoenix
    and most backends take). The spans carry the gen_ai.* and OpenInference attributes
    of the live export, and a span per wait before a call.
    """
    export_format = _export_format(export_format, endpoint, output)
    with bad_input_exits():
        from fanout.trace import SpanFilter

        where = SpanFilter(
            job=job, trace=trace, since=_when(since, "--since"), until=_when(until, "--until")
        )
        _need_duckdb()
        if endpoint is not None:
            count = _post(directory, endpoint, where)
            typer.echo(f"sent {count:,} spans to {endpoint}", err=True)
            return
        count = _write(directory, export_format, output, where)
        if output is None:
            return
    typer.echo(f"exported {count:,} spans to {output}", err=True)


def _export_format(export_format: str | None, endpoint: str | None, output: Path | None) -> str:
    if export_format is None:
        export_format = "otlp-proto" if endpoint is not None else "otlp-json"
    if export_format not in TRACE_EXPORT_FORMATS:
        formats = ", ".join(TRACE_EXPORT_FORMATS)
        fail(f"unknown --format {export_format!r}: choose one of {formats}")
    if endpoint is not None:
        if export_format != "otlp-proto" or output is not None:
            fail("--endpoint sends OTLP protobuf itself: drop --format otlp-json and --output")
        if not endpoint.startswith(("http://", "https://")):
            fail(f"--endpoint {endpoint!r} is not an http(s) URL (e.g. http://HOST:4318/v1/traces)")
    return export_format


def _when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not an ISO time: give e.g. 2026-12-04 or 2026-12-04T18:00"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _post(directory: Path, endpoint: str, where: SpanFilter) -> int:
    from fanout.config import TraceConfig
    from fanout.trace import otel_settings, post_otlp

    settings = otel_settings(TraceConfig(otlp=True))  # headers and resource from OTEL_*
    assert settings is not None
    return post_otlp(
        directory, endpoint, headers=settings.headers, where=where, resource=settings.resource
    )


def _write(directory: Path, export_format: str, output: Path | None, where: SpanFilter) -> int:
    """Write the export to ``output`` (whole, or not at all) or stdout."""
    from fanout.trace import export_otlp, export_otlp_proto

    binary = export_format == "otlp-proto"

    def run(out: IO[str] | IO[bytes]) -> int:
        if binary:
            return export_otlp_proto(directory, out, where=where)  # type: ignore[arg-type]
        return export_otlp(directory, out, where=where)  # type: ignore[arg-type]

    if output is None:
        try:
            count = run(sys.stdout.buffer if binary else sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has all it wanted
            _quiet_stdout()
            return 0
        return count
    partial = output.with_name(output.name + ".partial")
    try:  # a whole file or none: a failed export leaves no half file behind
        out: IO[Any] = partial.open("wb") if binary else partial.open("w", encoding="utf-8")
        with out:
            count = run(out)
        partial.replace(output)
    except OSError as exc:
        raise ConfigError(f"cannot write {str(output)!r}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
    return count


def _quiet_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that cannot fail.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (a test runner's buffer)
        pass
    finally:
        os.close(devnull)
