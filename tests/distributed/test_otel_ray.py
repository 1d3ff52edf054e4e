"""Live OpenTelemetry export from a Ray job: every worker process exports its own spans.

Only the driver's environment names the OTLP endpoint (the cluster was started before
it was set): the driver resolves the settings and hands them to each worker.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import sim_config
from support_otlp import otlp_receiver

from fanout import DAG
from fanout.distributed import RayEngine

pytestmark = pytest.mark.usefixtures("ray_cluster")


def rate() -> DAG:
    dag = DAG("rate")
    dag.input("text")
    dag.output(label=dag.llm("fast", "Rate the sentiment of: {text}", max_tokens=5, name="rate"))
    return dag


def test_each_ray_worker_exports_its_spans_and_they_match_the_parquet_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "fanout-ray")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")

        async def main() -> None:
            async with RayEngine(sim_config(2.0), workers=2, traces=tmp_path / "traces") as eng:
                results = await asyncio.gather(
                    *(eng.run(rate(), {"text": f"t{i}"}, record_key=str(i)) for i in range(40))
                )
            assert all(r.ok for r in results)

        asyncio.run(main())
        rows = pq.read_table(tmp_path / "traces").to_pylist()
        waits = sum(1 for r in rows if (r["limiter_wait_ms"] or 0) > 0)
        spans = receiver.wait_for(len(rows) + waits)
    assert len([r for r in rows if r["record_type"] == "run"]) == 40
    ids = {s["span_id"]: s for s in spans}
    assert len(ids) == len(spans) == len(rows) + waits  # each row, and a span per wait
    assert {s["name"] for s in spans if s["span_id"] not in {r["span_id"] for r in rows}} <= {
        "fanout.limiter_wait"
    }
    for row in rows:
        span = ids[row["span_id"]]
        assert span["trace_id"] == row["trace_id"]
        assert span["parent_span_id"] == row["parent_span_id"]
        if row["record_type"] == "attempt":
            attrs = span["attributes"]
            assert attrs["gen_ai.usage.input_tokens"] == row["input_tokens"]
            assert attrs["gen_ai.usage.output_tokens"] == row["output_tokens"]
            assert attrs["llm.cost.total"] == pytest.approx(row["cost_usd"])
    for span in spans:  # complete trees
        assert span["parent_span_id"] is None or span["parent_span_id"] in ids
    pids = {s["resource"]["process.pid"] for s in spans}
    assert len(pids) == 2 and os.getpid() not in pids  # the two workers, not the driver
    assert {s["resource"]["service.name"] for s in spans} == {"fanout-ray"}
