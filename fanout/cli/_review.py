"""``fanout review``: pending human reviews — list, show, decide, and resume the paused run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fanout.cli._common import ConfigOpt, PipelineArg, bad_input_exits, fail, group, load_cfg
from fanout.errors import ConfigError

if TYPE_CHECKING:
    from fanout.store import Review, ReviewStatus, ReviewStore

__all__ = ["commands"]

commands = group("Pending human reviews: list, show, approve, reject, edit; resume the paused run.")

_STATUSES = ("pending", "approved", "rejected", "edited")

ReviewIdArg = Annotated[
    str, typer.Argument(help="A review id (see `fanout review list`).", show_default=False)
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The engine's data dir (where sessions.db lives). Default: the config's data_dir.",
        file_okay=False,
        show_default=False,
    ),
]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who decides (kept with the decision).")]
ResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume",
        help="Then resume the paused run with this pipeline (path/to/file.py:attr) and print "
        "its result as JSON.",
        metavar="PIPELINE",
        show_default=False,
    ),
]


@commands.command("list", short_help="Reviews as JSON lines, oldest first.")
def review_list(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    status: Annotated[
        str | None,
        typer.Option(help="Only reviews with this status: pending, approved, rejected, edited."),
    ] = None,
) -> None:
    """Reviews as JSON lines, oldest first (all of them, or those with --status)."""
    if status is not None and status not in _STATUSES:
        fail(f"--status {status!r} is not a review status; use pending/approved/rejected/edited")
    with bad_input_exits():
        reviews = _review_store(data_dir, config).list(status=status)
    for review in reviews:
        typer.echo(json.dumps(review.to_dict(), ensure_ascii=False, default=str))


@commands.command("show", short_help="One review as JSON.")
def review_show(
    review_id: ReviewIdArg, data_dir: DataDirOpt = None, config: ConfigOpt = None
) -> None:
    """One review as JSON: the value under review, the instructions, the decision."""
    with bad_input_exits():
        review = _review_store(data_dir, config).get(review_id)
    typer.echo(json.dumps(review.to_dict(), ensure_ascii=False, indent=2, default=str))


@commands.command("approve", short_help="Approve the value under review.")
def review_approve(
    review_id: ReviewIdArg,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    by: ByOpt = None,
    resume: ResumeOpt = None,
) -> None:
    """Approve the value under review (the step's output is that value)."""
    _decide(review_id, "approved", data_dir, config, by=by, resume=resume)


@commands.command("reject", short_help="Reject the value: the step fails.")
def review_reject(
    review_id: ReviewIdArg,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    reason: Annotated[
        str | None, typer.Option(help="Why (the failed step's error says it).")
    ] = None,
    by: ByOpt = None,
    resume: ResumeOpt = None,
) -> None:
    """Reject the value under review: the step fails, and so does what depends on it."""
    _decide(review_id, "rejected", data_dir, config, by=by, reason=reason, resume=resume)


@commands.command("edit", short_help="Replace the value under review.")
def review_edit(
    review_id: ReviewIdArg,
    value: Annotated[
        str, typer.Option("--value", help="The corrected value, as JSON.", show_default=False)
    ],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    by: ByOpt = None,
    resume: ResumeOpt = None,
) -> None:
    """Replace the value under review (the step's output is the edited value)."""
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        fail(f"--value is not valid JSON ({exc}); quote a string as '\"text\"'")
    _decide(review_id, "edited", data_dir, config, by=by, value=parsed, resume=resume)


@commands.command("resume", short_help="Resume the run a decided review paused.")
def review_resume(
    review_id: ReviewIdArg,
    pipeline: PipelineArg,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Resume the run a decided review paused, from its checkpoint; print its result."""
    _resume_review(review_id, pipeline, data_dir, config)


def _review_store(data_dir: Path | None, config: Path | None) -> ReviewStore:
    from fanout.config import load_config
    from fanout.store import ReviewStore

    if data_dir is None and config is not None:
        configured = load_config(config).data_dir
        data_dir = Path(configured) if configured is not None else None
    if data_dir is None:
        raise ConfigError("no review store: pass --data-dir DIR, or a --config that sets data_dir")
    if not data_dir.is_dir():
        raise ConfigError(f"data dir {str(data_dir)!r} does not exist; pass the engine's data_dir")
    return ReviewStore(data_dir)


def _decide(
    review_id: str,
    status: ReviewStatus,
    data_dir: Path | None,
    config: Path | None,
    *,
    by: str | None,
    value: object = None,
    reason: str | None = None,
    resume: str | None = None,
) -> None:
    with bad_input_exits():
        store = _review_store(data_dir, config)
        review: Review = store.decide(review_id, status, value=value, reason=reason, by=by)
    if resume is None:
        typer.echo(json.dumps(review.to_dict(), ensure_ascii=False, default=str))
        return
    _resume_review(review_id, resume, data_dir, config)


def _resume_review(
    review_id: str, pipeline: str, data_dir: Path | None, config: Path | None
) -> None:
    from fanout.batch import load_pipeline
    from fanout.run import Engine

    with bad_input_exits():
        store = _review_store(data_dir, config)
        dag = load_pipeline(pipeline)
        engine = Engine(load_cfg(config), store=store.path, reviews=store)

        async def resume() -> dict[str, object]:
            async with engine:
                return (await engine.resume(dag, review_id)).to_dict()

        result = asyncio.run(resume())
    typer.echo(json.dumps(result, ensure_ascii=False, default=str))
