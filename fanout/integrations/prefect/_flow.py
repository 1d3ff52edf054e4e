"""A fanout batch job as a Prefect task and flow; Prefect's retries resume the job."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from fanout.batch import JobStats, load_pipeline, run_file
from fanout.dag import DAG
from fanout.errors import ConfigError
from fanout.integrations._summary import progress_line, summary, summary_markdown
from fanout.run import Engine

__all__ = ["batch_task", "fanout_batch_flow", "run_batch"]


def run_batch(
    pipeline: str | DAG,
    input_path: str | Path,
    output_dir: str | Path,
    *,
    config: str | Path | None = None,
    traces: str | Path | None = None,
    key: str | None = None,
    max_in_flight: int | None = None,
    budget_usd: float | None = None,
    max_outage_s: float = 600.0,
    progress_every_s: float = 5.0,
    artifact_key: str | None = "fanout-batch-summary",
) -> dict[str, Any]:
    """Run ``pipeline`` (a DAG, or ``path/file.py:attr``) over ``input_path`` into
    ``output_dir`` on an engine from ``config``; the body of :data:`batch_task`.

    Every attempt resumes ``output_dir``: records with a row are skipped, calls in the
    call journal are answered from it. A provider down longer than ``max_outage_s``
    stops the attempt with ``ProviderOutage``, which Prefect retries."""
    logger = get_run_logger()
    attempt = task_run.run_count or 1
    dag = load_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
    if attempt > 1:
        logger.info("fanout: attempt %d resumes %s", attempt, output_dir)

    def progress(stats: JobStats) -> None:
        logger.info(progress_line(stats))

    async def job() -> JobStats:
        async with Engine.from_config(config, traces=traces) as engine:
            return await run_file(
                engine, dag, input_path, output_dir, key=key, max_in_flight=max_in_flight,
                budget_usd=budget_usd, max_outage_s=max_outage_s, on_progress=progress,
                progress_every_s=progress_every_s,
            )  # fmt: skip

    stats = asyncio.run(job())
    if artifact_key is not None:
        create_markdown_artifact(
            summary_markdown(stats, attempt=attempt), key=artifact_key,
            description=f"fanout batch job into {output_dir}",
        )  # fmt: skip
    return summary(stats, attempt=attempt)


def _retryable(_task: Any, _run: Any, state: Any) -> bool:
    """Retry anything but a configuration error (a bad pipeline, config or input fails
    the same way every time)."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # the result cannot be read: let the retry policy decide
        return True
    return not isinstance(exc, ConfigError)


batch_task = task(
    name="fanout-batch",
    retries=2,
    retry_delay_seconds=30,
    retry_condition_fn=_retryable,
    cache_policy=NO_CACHE,  # a job's state is its output directory, not Prefect's cache
)(run_batch)
"""``run_batch`` as a Prefect task: 2 retries, 30 s apart (``batch_task.with_options(...)``
changes them), none for a ``ConfigError``."""


@flow(name="fanout-batch-job")
def fanout_batch_flow(
    pipeline: str,
    input_path: str,
    output_dir: str,
    config: str | None = None,
    traces: str | None = None,
    key: str | None = None,
    max_in_flight: int | None = None,
    max_outage_s: float = 600.0,
    retries: int = 2,
    retry_delay_seconds: float = 30.0,
) -> dict[str, Any]:
    """One fanout batch job, as a flow a Prefect deployment schedules."""
    if retries < 0 or not math.isfinite(retry_delay_seconds) or retry_delay_seconds < 0:
        raise ConfigError("fanout_batch_flow: retries and retry_delay_seconds must be >= 0")
    run = batch_task.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds)
    result: dict[str, Any] = run(
        pipeline, input_path, output_dir, config=config, traces=traces, key=key,
        max_in_flight=max_in_flight, max_outage_s=max_outage_s,
    )  # fmt: skip
    return result
