"""Routing by task complexity: what triage costs against "the strong model for everything".

Runs ``examples/pipelines/triage.py``'s ``dag`` (``fast`` triages each record and answers
the easy ones; hard ones go to ``smart``) and its ``strong_only`` baseline (every record
on ``smart``) over the same records, on the simulated provider with the prices of
``examples/fanout.toml`` (latency set to zero: cost does not depend on it), and prints
both costs, the share of records routed to the strong model and the saving.

Run: python benchmarks/triage_cost.py [--input examples/data/tickets.jsonl] [--repeat 100]
Costs are the engine's own (prompt and reply tokens as the simulated provider reports
them, times the config's prices); replies of a real model would be longer, so the
absolute figures are small and the ratio is what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import platform
from pathlib import Path
from types import ModuleType

from fanout import DAG, Engine, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "fanout.toml"
PIPELINE = ROOT / "examples" / "pipelines" / "triage.py"


def load_pipeline() -> ModuleType:
    spec = importlib.util.spec_from_file_location("triage_example", PIPELINE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def cost_of(engine: Engine, dag: DAG, records: list[dict[str, str]]) -> tuple[float, int]:
    """Total cost in USD of running ``dag`` over ``records``, and how many took the hard branch."""
    results = await asyncio.gather(*(engine.run(dag, {"text": r["text"]}) for r in records))
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} runs failed, e.g. {failed[0].to_dict()}")
    hard = sum(1 for r in results if r.outputs.get("level") == "hard")
    return sum(r.cost_usd for r in results), hard


async def main(path: Path, records: list[dict[str, str]], repeat: int) -> None:
    records = records * repeat
    data = load_config(CONFIG).model_dump()
    data["providers"]["sim"]["latency_ms"] = 0
    data["providers"]["sim"]["requests_per_min"] = 10_000_000
    config = parse_config(data)
    pipeline = load_pipeline()
    async with Engine(config) as engine:
        triage_usd, hard = await cost_of(engine, pipeline.dag, records)
        strong_usd, _ = await cost_of(engine, pipeline.strong_only, records)
    fast, smart = config.models["fast"], config.models["smart"]
    share = hard / len(records)
    print(f"records: {len(records)} ({path.name} x {repeat}); hard: {hard} ({share:.0%})")
    print(
        f"prices (USD per Mtok in/out): fast {fast.input_usd_per_mtok}/{fast.output_usd_per_mtok}, "
        f"smart {smart.input_usd_per_mtok}/{smart.output_usd_per_mtok}"
    )
    print(f"triage (fast triage + easy on fast, hard on smart): ${triage_usd:.6f}")
    print(f"strong model for everything:                        ${strong_usd:.6f}")
    ratio = triage_usd / strong_usd
    print(f"triage costs {ratio:.0%} of strong-only ({1 - ratio:.0%} saved)")
    print(f"python {platform.python_version()} on {platform.machine()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--input", type=Path, default=ROOT / "examples" / "data" / "tickets.jsonl")
    parser.add_argument("--repeat", type=int, default=100, help="times the records are repeated")
    args = parser.parse_args()
    lines = args.input.read_text(encoding="utf-8").splitlines()
    asyncio.run(main(args.input, [json.loads(line) for line in lines if line.strip()], args.repeat))
