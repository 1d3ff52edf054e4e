"""How much of a provider's rate limit fanout uses, and how many 429s it draws.

Starts ``fanout sim-server`` as a separate process with a requests/min limit,
runs the ``classify`` example (examples/pipelines/classify.py) as a steady batch
for ``--duration`` seconds per scenario, and prints, from the emulator's own counts:

  utilisation = accepted requests / the provider's ceiling over the run
                (its bucket's burst plus its refill over the elapsed time)
  429 share   = 429 answers / all requests the provider saw

Scenarios (configured limit vs. the provider's real one):
  equal       configured == real                        target >= 0.98, <= 0.5% 429s
  half        real == configured / 2 (must be learned)  target >= 0.95, <= 2% 429s
  none        no limit configured                       target >= 0.95
  half-aimd / none-aimd: the same, but the provider sends no x-ratelimit-limit-*
              headers, so only 429s (AIMD) can teach the limit.

Every record must complete with the right label; the script checks and says so.
``--ray N`` runs the same on a local Ray instance with N workers: each worker's limiter
enforces its lease of the limit, and one coordinator learns the pace from all of them.

Run: python benchmarks/rate_limit.py [--duration 60] [--rpm 3000] [--scenarios equal,half]
                                     [--ray N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from fanout import DAG, Engine, parse_config
from fanout.config import Config
from fanout.sim._text import sentiment

if TYPE_CHECKING:
    from fanout.distributed import RayEngine

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [
    "great product, I love it",
    "arrived broken and late, terrible",
    "it is a chair",
    "thanks, excellent service",
    "worst purchase, I want a refund",
]


@dataclass(frozen=True)
class Scenario:
    name: str
    provider_rpm: float
    configured_rpm: float | None
    limit_headers: bool


def load_classify() -> DAG:
    spec = importlib.util.spec_from_file_location(
        "classify", ROOT / "examples/pipelines/classify.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    assert isinstance(dag, DAG)
    return dag


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def emulator(rpm: float, *, latency_ms: float, limit_headers: bool) -> Iterator[str]:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "fanout",
        "sim-server",
        "--port",
        str(port),
        "--rpm",
        str(rpm),
        "--latency-ms",
        str(latency_ms),
        "--jitter-sigma",
        "0.3",
    ]
    if not limit_headers:
        args.append("--no-limit-headers")
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{root}/stats").raise_for_status()
                break
            time.sleep(0.05)
        yield root
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_engine(config: Config, ray_workers: int | None) -> Engine | RayEngine:
    if ray_workers is None:
        return Engine(config)
    from fanout.distributed import RayEngine

    return RayEngine(config, workers=ray_workers)


async def run_scenario(
    dag: DAG, scenario: Scenario, duration_s: float, latency_ms: float, ray_workers: int | None
) -> str:
    with emulator(
        scenario.provider_rpm, latency_ms=latency_ms, limit_headers=scenario.limit_headers
    ) as root:
        config = parse_config(
            {
                "providers": {
                    "emu": {
                        "kind": "openai",
                        "base_url": f"{root}/v1",
                        "requests_per_min": scenario.configured_rpm,
                        "max_concurrency": 512,
                        "retry": {"max_attempts": 10},
                    }
                },
                "models": {"fast": {"provider": "emu", "model": "sim-small"}},
            }
        )
        async with make_engine(config, ray_workers) as engine, httpx.AsyncClient() as http:
            await http.post(f"{root}/stats/reset")
            window = asyncio.Semaphore(256)
            tasks: list[asyncio.Task[bool]] = []

            async def one(i: int) -> bool:
                try:
                    text = f"{TEXTS[i % len(TEXTS)]} (review {i})"
                    result = await engine.run(dag, {"text": text})
                    return result.ok and result.outputs["label"] == sentiment(text)
                finally:
                    window.release()

            start = time.monotonic()
            i = 0
            while time.monotonic() - start < duration_s:
                try:
                    await asyncio.wait_for(
                        window.acquire(), timeout=start + duration_s - time.monotonic()
                    )
                except TimeoutError:
                    break
                tasks.append(asyncio.create_task(one(i)))
                i += 1
            stats = (await http.get(f"{root}/stats")).json()  # the measured window ends here
            correct = await asyncio.gather(*tasks)
            (state,) = engine.limiter_states()
    rate = scenario.provider_rpm / 60
    ceiling = rate * 1.0 + rate * stats["elapsed_s"]  # the emulator's burst is 1 s of refill
    seen = stats["accepted"] + stats["limited"]
    learned = f"{state.requests_per_min:,.0f}" if state.requests_per_min else "unlimited"
    ok = "all correct" if all(correct) else f"{len(correct) - sum(correct)} WRONG"
    return (
        f"{scenario.name:10s} provider {scenario.provider_rpm:6,.0f} rpm, configured "
        f"{scenario.configured_rpm or 0:6,.0f}: utilisation {stats['accepted'] / ceiling:6.3f}, "
        f"429s {stats['limited'] / max(1, seen):6.2%} ({stats['limited']}/{seen}), "
        f"pace learned {learned} rpm, {len(correct)} records {ok}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per scenario")
    parser.add_argument("--rpm", type=float, default=3000.0, help="the configured limit")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="emulated latency")
    parser.add_argument("--scenarios", default="equal,half,none,half-aimd,none-aimd")
    parser.add_argument("--ray", type=int, metavar="N", help="on local Ray, N workers")
    args = parser.parse_args()
    rpm = args.rpm
    all_scenarios = {
        "equal": Scenario("equal", rpm, rpm, True),
        "half": Scenario("half", rpm / 2, rpm, True),
        "none": Scenario("none", rpm, None, True),
        "half-aimd": Scenario("half-aimd", rpm / 2, rpm, False),
        "none-aimd": Scenario("none-aimd", rpm, None, False),
    }
    dag = load_classify()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}"
    )
    latency = f"emulator latency {args.latency_ms:.0f} ms (lognormal sigma 0.3)"
    where = f"Ray, {args.ray} workers" if args.ray else "one process"
    print(f"{args.duration:.0f} s per scenario, {latency}, {where}")
    for name in args.scenarios.split(","):
        print(
            asyncio.run(
                run_scenario(dag, all_scenarios[name], args.duration, args.latency_ms, args.ray)
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
