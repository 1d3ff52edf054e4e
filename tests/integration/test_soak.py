"""Soak (slow): 200,000 calls against the instant emulator; none times out, none fails.

What caught the 30 s hangs on a healthy local server: httpx's pool let a request that
arrived later take the connection an older queued one was given, over and over, until
the older one hit the pool timeout (then the circuit opened on the timeouts and records
were dead-lettered). The default run pins the fix with
``tests/unit/test_provider_transport.py::test_no_two_calls_ever_share_a_pool``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from support import emulator_process

from fanout import DAG, Engine, parse_config
from fanout.batch import run_file

pytestmark = pytest.mark.slow

CALLS = 200_000


def classify() -> DAG:
    dag = DAG("classify")
    dag.input("text", type=str)
    dag.output(label=dag.llm("fast", "Classify: {text}", max_tokens=5, name="label"))
    return dag


@pytest.mark.timeout(1800)
async def test_200k_calls_against_the_instant_emulator_none_times_out(tmp_path: Path) -> None:
    records = tmp_path / "in.jsonl"
    with records.open("w", encoding="utf-8") as out:
        for i in range(CALLS):
            out.write(json.dumps({"text": f"review {i}"}) + "\n")
    with emulator_process() as emulator:
        # a timeout far above any healthy call here (p99 ~ 0.1 s), far below the 30 s
        # the starved calls waited, and a wide window: a starved call would time out
        cfg = parse_config(
            {
                "providers": {
                    "emu": {"kind": "openai", "base_url": emulator.base_url, "timeout_s": 10.0}
                },
                "models": {"fast": {"provider": "emu", "model": "sim-small"}},
            }
        )
        async with Engine(cfg) as engine:
            stats = await run_file(
                engine, classify(), records, tmp_path / "out", max_in_flight=1000
            )
        served = emulator.stats()
    assert (stats.records, stats.ok, stats.dead_letters) == (CALLS, CALLS, 0)
    attempts = pq.read_table(tmp_path / "out" / "results", columns=["attempts"])["attempts"]
    assert pc.sum(attempts).as_py() == CALLS  # not one retry: no timeout, no error
    assert served["accepted"] == CALLS and served["cancelled"] == 0
