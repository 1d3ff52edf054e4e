"""Throughput with 1, 2 and 4 Ray worker actors, and a cluster-wide limit shared by 4.

Starts ``fanout sim-server`` in its own process and a local Ray instance, then runs
the ``classify`` example as a steady stream through ``RayEngine``:

  scaling   the emulator's limit far above what the workers can drive; each worker
            holds at most ``--window`` requests in flight (its micro-batches), so one
            worker's throughput is window / latency and N workers should give N times
            that, as long as the machine's cores keep up
  binding   4 workers against a limit below what they could drive: utilisation =
            accepted / the provider's ceiling (its 1 s burst plus its refill over the
            run), and 429s / requests (targets: >= 0.95 and <= 1%)

Run: python benchmarks/ray_scaling.py [--duration 20] [--latency-ms 200] [--window 32]
                                      [--binding-rpm 3000] [--binding-duration 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path

import httpx
import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rate_limit import TEXTS, emulator, load_classify

from fanout import DAG, parse_config
from fanout.distributed import RayEngine


async def stream(
    root: str, dag: DAG, workers: int, duration_s: float, window: int, rpm: float | None
) -> tuple[float, dict[str, float], int]:
    """(completed requests/s, the emulator's stats, failures) over ``duration_s``."""
    config = parse_config(
        {
            "providers": {
                "emu": {
                    "kind": "openai",
                    "base_url": f"{root}/v1",
                    "requests_per_min": rpm,
                    "max_concurrency": 10_000,
                    "retry": {"max_attempts": 10},
                }
            },
            "models": {"fast": {"provider": "emu", "model": "sim-small"}},
        }
    )
    batch = max(1, window // 2)
    engine = RayEngine(config, workers=workers, batch_size=batch, batches_per_worker=2)
    async with engine, httpx.AsyncClient() as http:
        # warm up: every worker answers once before the clock starts
        await asyncio.gather(*(engine.run(dag, {"text": TEXTS[0]}) for _ in range(workers * 4)))
        await asyncio.sleep(0.5)
        await http.post(f"{root}/stats/reset")
        outstanding = asyncio.Semaphore(workers * window * 2)  # keep every worker's queue fed
        done = failed = 0

        async def one(i: int) -> None:
            nonlocal done, failed
            try:
                result = await engine.run(dag, {"text": f"{TEXTS[i % len(TEXTS)]} ({i})"})
                done += 1
                failed += not result.ok
            finally:
                outstanding.release()

        tasks = []
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < duration_s:
            try:
                await asyncio.wait_for(
                    outstanding.acquire(), timeout=start + duration_s - time.monotonic()
                )
            except TimeoutError:
                break
            tasks.append(asyncio.create_task(one(i)))
            i += 1
        completed, elapsed = done, time.monotonic() - start
        stats = (await http.get(f"{root}/stats")).json()
        await asyncio.gather(*tasks)
    return completed / elapsed, stats, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--window", type=int, default=32, help="requests in flight per worker")
    parser.add_argument("--binding-rpm", type=float, default=3_000.0)
    parser.add_argument(
        "--binding-duration", type=float, default=60.0, help="seconds of the binding run"
    )
    args = parser.parse_args()
    dag = load_classify()
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=os.cpu_count())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}"
    )
    print(
        f"emulator latency {args.latency_ms:.0f} ms (lognormal sigma 0.3), "
        f"{args.window} requests in flight per worker, {args.duration:.0f} s per row"
    )
    ideal = args.window / (args.latency_ms / 1000)
    print(f"{'workers':>8} {'requests/s':>12} {'per worker':>11} {'vs 1 worker':>12}")
    base = None
    with emulator(1_000_000, latency_ms=args.latency_ms, limit_headers=True) as root:
        for workers in (1, 2, 4):
            rate, _, failed = asyncio.run(
                stream(root, dag, workers, args.duration, args.window, None)
            )
            base = base or rate
            print(
                f"{workers:>8} {rate:>12,.0f} {rate / workers:>11,.0f} {rate / base:>11.2f}x"
                + (f"  ({failed} failed)" if failed else "")
            )
    print(f"(one worker's ceiling: window / latency = {ideal:,.0f} requests/s)")
    with emulator(args.binding_rpm, latency_ms=args.latency_ms, limit_headers=True) as root:
        _, stats, failed = asyncio.run(
            stream(root, dag, 4, args.binding_duration, args.window, args.binding_rpm)
        )
    per_s = args.binding_rpm / 60
    ceiling = per_s * 1.0 + per_s * stats["elapsed_s"]
    seen = stats["accepted"] + stats["limited"]
    print(
        f"binding: 4 workers, provider limit {args.binding_rpm:,.0f}/min: utilisation "
        f"{stats['accepted'] / ceiling:.3f} (target >= 0.95), 429s "
        f"{stats['limited'] / max(1, seen):.2%} ({stats['limited']}/{seen}; target <= 1%)"
        + (f", {failed} failed" if failed else "")
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
