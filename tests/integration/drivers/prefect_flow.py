"""Runs in the Prefect test venv (tests/support_venv.py), not the test's own: one fanout
batch job as a Prefect flow whose task is retried, then what Prefect recorded, as JSON.

``python prefect_flow.py PIPELINE RECORDS OUT CONFIG TRACES RESULT_JSON``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(pipeline: str, records: str, out: str, config: str, traces: str, result: str) -> None:
    import prefect
    from prefect import get_client
    from prefect.artifacts import Artifact
    from prefect.testing.utilities import prefect_test_harness

    import fanout
    from fanout.integrations.prefect import fanout_batch_flow

    with prefect_test_harness():  # a Prefect server of its own, on a temporary database
        summary = fanout_batch_flow(
            pipeline, records, out, config=config, traces=traces, key="id",
            max_in_flight=1, max_outage_s=0.3, retries=2, retry_delay_seconds=0,
        )  # fmt: skip
        artifact = Artifact.get("fanout-batch-summary")
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs()
            states = {
                str(run.id): [s.name for s in client.read_task_run_states(run.id)] for run in runs
            }
            logs = [log.message for log in client.read_logs()]
    report = {
        "prefect": prefect.__version__,
        "fanout_file": fanout.__file__,
        "summary": summary,
        "artifact": None if artifact is None else str(artifact.data),
        "task_runs": [
            {
                "name": r.name,
                "run_count": r.run_count,
                "state": r.state_name,
                "states": states[str(r.id)],
            }
            for r in runs
        ],
        "logs": [m for m in logs if m.startswith("fanout:")],
    }
    Path(result).write_text(json.dumps(report, indent=1, default=str), "utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
