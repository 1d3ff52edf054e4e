"""``fanout bench --ray``: the load runs on RayEngine (same ``run()``), the workers' traces
and the emulator's counts agree, every request is counted once."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from fanout.batch import load_pipeline
from fanout.bench import BenchOptions, parse_arrivals, parse_emulate, run_bench, sample_inputs
from fanout.config import default_config

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = f"{ROOT / 'examples' / 'pipelines' / 'classify.py'}:dag"


@pytest.mark.slow
def test_bench_on_ray_counts_every_request_once(ray_cluster: Cluster, tmp_path: Path) -> None:
    dag = load_pipeline(CLASSIFY)
    options = BenchOptions(4.0, 1.0, drain_s=60.0, ray="auto", workers=2, plots=False)
    report = run_bench(
        CLASSIFY, dag, default_config(), parse_arrivals("constant:10/s"), sample_inputs(dag),
        tmp_path / "report", options, emulate=parse_emulate("rpm=6000,latency=50ms"),
    )  # fmt: skip
    requests = report["requests"]
    assert (requests["offered"], requests["completed"], requests["unfinished"]) == (40, 40, 0)
    assert requests["by_status"] == {"ok": 40}
    assert report["setup"]["ray"] == "auto" and report["setup"]["workers"] == 2
    (provider,) = report["providers"]  # rows from both workers' trace files
    assert provider["accepted"] == report["emulator"]["accepted"] == 40
    assert provider["rate_limited"] == report["emulator"]["limited"]
