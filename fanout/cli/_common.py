"""What every command group shares: option types, the one-line error exit, config loading.

Exit codes (every command; ``fanout run`` and ``fanout demo`` use all of them):

====  ======================  ===========================================================
0     EXIT_OK                 done; a job ran at least one record ``ok`` (or waiting for
                              review), had nothing left to resume, or its input was empty
                              (a warning says so)
1     (Python's)              an unexpected failure (a bug, a full disk): a traceback
2     EXIT_BAD_INPUT          bad input, stopped before any call: a config, pipeline, file
                              or option is wrong, a column is missing, the first records
                              all fail the same way, Ray cannot be joined, a worker's
                              config is wrong, a missing extra (one ``error:`` line)
3     EXIT_PROVIDER_DOWN      a provider stayed down longer than ``--max-outage``; the job
                              stopped, finished records are written; run it again to resume
4     EXIT_NO_RECORD_OK       the job ran records and none succeeded (see the dead letters)
130   EXIT_INTERRUPTED        Ctrl-C or SIGTERM; finished records are written; resumable
====  ======================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from fanout.errors import ConfigError

if TYPE_CHECKING:
    from fanout.config import Config

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_NO_RECORD_OK",
    "EXIT_OK",
    "EXIT_PROVIDER_DOWN",
    "ConfigOpt",
    "PipelineArg",
    "RayOpt",
    "WorkersOpt",
    "bad_input_exits",
    "fail",
    "group",
    "load_cfg",
    "trace_dir",
]

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_PROVIDER_DOWN = 3
EXIT_NO_RECORD_OK = 4
EXIT_INTERRUPTED = 130


def group(help_text: str | None = None) -> typer.Typer:
    """A command group with the CLI's settings (plain help text, no completion)."""
    return typer.Typer(
        help=help_text,
        add_completion=False,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


PipelineArg = Annotated[
    str,
    typer.Argument(
        help="The DAG to run: path/to/file.py:attr or module.name:attr.",
        metavar="PIPELINE",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML config (providers, models). Default: the embedded simulated provider.",
        dir_okay=False,
    ),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Run on Ray: local (start one here), auto (join the running cluster, "
        "else start one) or a cluster ADDRESS. Needs the ray extra.",
        metavar="local|auto|ADDRESS",
        show_default=False,
    ),
]
WorkersOpt = Annotated[int, typer.Option(min=1, help="Worker actors, with --ray.")]


def fail(message: str) -> NoReturn:
    """Print one ``error:`` line and exit 2: the message names the thing and the fix."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


@contextmanager
def bad_input_exits() -> Iterator[None]:
    """A :class:`ConfigError` (bad pipeline, file, config, DAG, missing extra) exits 2."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc))


def load_cfg(path: Path | None) -> Config:
    """The config file at ``path``, else the embedded default (the simulated provider)."""
    from fanout.config import default_config, load_config

    return load_config(path) if path is not None else default_config()


def trace_dir(path: Path | None) -> Path | None:
    """``path``, unless it is a file (the directory is created when the job starts)."""
    if path is not None and path.exists() and not path.is_dir():
        raise ConfigError(f"--traces {str(path)!r} exists and is not a directory; pick a directory")
    return path
