"""One oversized record among many: does it hold the others up?

Runs the same batch job twice against the emulator (a tokens/min limit whose bucket holds
10,000 tokens): N small records, then the same with one 1 MB record (~250k tokens, a
"Request too large" 429 with ``retry-after: 60``) among them. Prints each job's wall
time, the ratio, and how the big record ended (its error type and the calls it took).

Before issue 26 the big record was retried as a rate limit (a 60 s pause of every call
per try: 272 s for 200 records); then its local token debt held the queue (25 s).
Run: python benchmarks/too_large.py [--records 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from fanout import DAG, Engine, parse_config
from fanout.batch import run_file
from fanout.sim.server import EmulatorConfig, EmulatorServer


def classify() -> DAG:
    dag = DAG("classify")
    dag.input("text", type=str)
    dag.output(label=dag.llm("fast", "Classify: {text}", max_tokens=5, name="label"))
    return dag


async def job(base_url: str, folder: Path, records: int, huge: bool) -> tuple[float, str]:
    source = folder / f"in-{huge}.jsonl"
    with source.open("w", encoding="utf-8") as out:
        for i in range(records):
            out.write(json.dumps({"id": f"r{i}", "text": f"review {i}"}) + "\n")
            if huge and i == 10:
                out.write(json.dumps({"id": "huge", "text": "word " * 200_000}) + "\n")
    cfg = parse_config(
        {
            "providers": {"emu": {"kind": "openai", "base_url": base_url}},
            "models": {"fast": {"provider": "emu", "model": "sim-small"}},
        }
    )
    async with Engine(cfg) as engine:
        start = time.monotonic()
        await run_file(engine, classify(), source, folder / f"out-{huge}", key="id")
        wall = time.monotonic() - start
    table = pq.read_table(folder / f"out-{huge}" / "results")
    big = table.filter(pc.equal(table["key"], "huge")).to_pylist()
    outcome = f"{big[0]['error_type']} after {big[0]['attempts']} call(s)" if big else "-"
    return wall, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300)
    args = parser.parse_args()
    emulator = EmulatorServer(EmulatorConfig(tokens_per_min=600_000))
    with emulator as server, tempfile.TemporaryDirectory() as tmp:
        alone, _ = asyncio.run(job(server.base_url, Path(tmp), args.records, huge=False))
        mixed, outcome = asyncio.run(job(server.base_url, Path(tmp), args.records, huge=True))
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, Python {platform.python_version()}")
    print(f"{args.records} small records alone:        {alone:.2f} s")
    print(f"the same with one 1 MB record among them: {mixed:.2f} s ({mixed / alone:.2f}x)")
    print(f"the 1 MB record: {outcome}")


if __name__ == "__main__":
    main()
