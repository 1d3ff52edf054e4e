"""Executor overhead: node executions per second on one core, simulated provider at zero latency.

Prints three figures:
  - 1-node DAG, one request at a time: requests/s and microseconds per request;
  - 1-node DAG, 500 requests in flight: node executions/s;
  - 1000-way map in one request (plus its input and fan-in): node executions/s.

Run: python benchmarks/executor_overhead.py [--seconds 3]
The process pins itself to one CPU where the OS allows it, so the figure is per core.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import sys
import time

from fanout import DAG, Engine, parse_config

CONFIG = parse_config(
    {
        "providers": {
            "sim": {"kind": "sim", "latency_ms": 0, "jitter_sigma": 0, "max_concurrency": 100_000}
        },
        "models": {
            "fast": {
                "provider": "sim",
                "model": "sim-small",
                "input_usd_per_mtok": 0.15,
                "output_usd_per_mtok": 0.6,
            }
        },
    }
)


def one_node() -> DAG:
    dag = DAG("one")
    dag.input("text")
    dag.output(label=dag.llm("fast", "Rate the sentiment of: {text}", max_tokens=5))
    return dag


def wide_map() -> DAG:
    dag = DAG("map")
    items = dag.input("items")
    scores = dag.map(dag.llm("fast", "Rate the sentiment of: {item}", max_tokens=5), over=items)
    dag.output(count=dag.reduce(len, scores, inline=True))
    return dag


async def sequential(engine: Engine, seconds: float) -> tuple[int, float]:
    dag, n = one_node(), 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(200):
            result = await engine.run(dag, {"text": f"review {i}: great product"})
            assert result.ok, result.error_message
        n += 200
    return n, time.perf_counter() - start


async def concurrent(engine: Engine, seconds: float, width: int = 500) -> tuple[int, float]:
    dag, n = one_node(), 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = [engine.run(dag, {"text": f"review {i}: great product"}) for i in range(width)]
        results = await asyncio.gather(*batch)
        assert all(r.ok for r in results)
        n += width
    return n, time.perf_counter() - start


async def mapped(engine: Engine, seconds: float, width: int = 1000) -> tuple[int, float]:
    dag, n = wide_map(), 0
    items = [f"sentence {i} is fine" for i in range(width)]
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        result = await engine.run(dag, {"items": items})
        assert result.ok and result.outputs["count"] == width, result.error_message
        n += width + 1  # the mapped llm calls plus the fan-in node
    return n, time.perf_counter() - start


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


async def main(seconds: float) -> None:
    async with Engine(CONFIG) as engine:
        await mapped(engine, 0.5)  # warm-up: imports, caches
        runs = [
            ("1-node DAG, sequential", await sequential(engine, seconds)),
            ("1-node DAG, 500 in flight", await concurrent(engine, seconds)),
            ("1000-way map", await mapped(engine, seconds)),
        ]
    print(f"machine: {cpu_model()} ({platform.machine()})")
    print(f"python {platform.python_version()}, cpus visible: {len(os.sched_getaffinity(0))}")
    for name, (n, elapsed) in runs:
        rate = n / elapsed
        print(f"{name:28s} {rate:10,.0f} node executions/s  ({1e6 / rate:6.1f} us each)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    gc.freeze()  # measure the engine, not collections of setup garbage
    asyncio.run(main(args.seconds))
    sys.exit(0)
