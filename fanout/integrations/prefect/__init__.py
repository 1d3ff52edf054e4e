"""Prefect 3 runs fanout batch jobs (``pip install 'fanout[prefect]'``).

:data:`batch_task` runs one job (``fanout.batch.run_file``) as a Prefect task;
:func:`fanout_batch_flow` wraps it in a flow. Prefect's retries are fanout's resume: every
attempt writes into the same output directory, so a retried task skips the records
that have a row and answers completed calls from the job's call journal (no call is
paid twice). Progress goes to the Prefect run logger; the summary is the task's return
value and a Markdown artifact.
"""

from fanout._extras import require

require("fanout.integrations.prefect", "prefect", extra="prefect")

from fanout.integrations.prefect._flow import (  # noqa: E402  # after the check
    batch_task,
    fanout_batch_flow,
    run_batch,
)

__all__ = ["batch_task", "fanout_batch_flow", "run_batch"]
