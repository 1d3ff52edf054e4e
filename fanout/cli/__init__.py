"""The ``fanout`` command line: argument parsing only; the work lives in the layers below.

One module per command group over the shared option types of ``_common``: jobs
(``run``, ``demo``, ``validate``), ``sim-server``, ``serve``, ``keys``, ``traces``,
``bench`` and ``plan``, ``review``. Bad input (a pipeline, input file, config or DAG that is wrong,
or a missing extra) prints one ``error: ...`` line naming the thing and the fix, and
exits 2, never a traceback.
"""

from __future__ import annotations

from typing import Annotated

import typer

from fanout.cli import _bench, _jobs, _keys, _review, _serve, _sim, _traces
from fanout.cli._common import EXIT_BAD_INPUT, EXIT_INTERRUPTED

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "app", "main"]

app = typer.Typer(
    name="fanout",
    help="Run DAGs of LLM and tool calls over files of records.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(_jobs.commands)
app.add_typer(_sim.commands)
app.add_typer(_serve.commands)
app.add_typer(_traces.commands, name="traces", short_help="Read a traces directory.")
app.add_typer(_bench.commands)
app.add_typer(
    _keys.commands, name="keys", short_help="Virtual API keys of the gateway: create, list, revoke."
)
app.add_typer(
    _review.commands, name="review", short_help="Human reviews: decide, resume the paused run."
)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        from fanout import __version__

        typer.echo(f"fanout {__version__}")
        raise typer.Exit()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="fanout")
