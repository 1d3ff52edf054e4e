"""Engine overhead over the network path: fanout vs a bare httpx loop, same concurrency.

Starts ``fanout sim-server`` (zero latency, no limits) in its own process pinned to
one CPU, pins this process to the other, then alternates two measurements:

  bare    an ``httpx.AsyncClient`` posting the same chat-completion body with N workers
  engine  ``Engine.run`` of the ``classify`` example (one llm node) with N workers,
          through the full call path: budget, limiter, circuit, retry, parsing

  traced  the same engine writing its trace (run, node and attempt rows; HMAC content)
          to Parquet in a temporary directory

and prints requests/s for each, the ratio engine / bare (target >= 0.8) and the
ratio traced / engine (target >= 0.95: tracing costs at most 5%).
Run: python benchmarks/overhead.py [--seconds 5] [--concurrency 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from statistics import mean

import httpx

from fanout import DAG, Engine, parse_config

PROMPT = "Classify the sentiment of this review as positive, negative or neutral. Review: {text}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def emulator() -> Iterator[tuple[str, int]]:
    """``fanout sim-server`` pinned to the last CPU; yields its root URL and process id."""
    port = free_port()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    server_cpu = cpus[-1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "sim-server", "--port", str(port)],
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: pin(server_cpu),
    )
    root = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{root}/stats").raise_for_status()
                break
            time.sleep(0.05)
        yield root, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def bare(base_url: str, seconds: float, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        done = 0
        end = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < end:
                body = {
                    "model": "sim-small",
                    "messages": [{"role": "user", "content": PROMPT.format(text=f"great {w}-{i}")}],
                    "max_tokens": 5,
                    "temperature": 0.0,
                }
                response = await client.post("/chat/completions", json=body)
                data = response.json()
                assert data["choices"][0]["message"]["content"]
                done += 1
                i += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return done / (time.perf_counter() - start)


async def engine_rps(
    base_url: str, seconds: float, concurrency: int, traces: str | None = None
) -> float:
    config = parse_config(
        {
            "providers": {
                "emu": {"kind": "openai", "base_url": base_url, "max_concurrency": concurrency}
            },
            "models": {"fast": {"provider": "emu", "model": "sim-small"}},
        }
    )
    dag = DAG("classify")
    dag.input("text")
    dag.output(label=dag.llm("fast", PROMPT, max_tokens=5))
    async with Engine(config, traces=traces) as engine:
        done = 0
        end = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < end:
                result = await engine.run(dag, {"text": f"great {w}-{i}"})
                assert result.ok, result.error_message
                done += 1
                i += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="workers (bare httpx is at its best near 8)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pin(0)
    os.environ.setdefault("FANOUT_TRACE_KEY", "benchmark-key")
    bare_runs: list[float] = []
    engine_runs: list[float] = []
    traced_runs: list[float] = []
    with emulator() as (root, _), tempfile.TemporaryDirectory() as tmp:
        base_url = f"{root}/v1"
        asyncio.run(bare(base_url, 1.0, args.concurrency))  # warm-up
        for r in range(args.rounds):
            bare_runs.append(asyncio.run(bare(base_url, args.seconds, args.concurrency)))
            engine_runs.append(asyncio.run(engine_rps(base_url, args.seconds, args.concurrency)))
            traced_runs.append(
                asyncio.run(engine_rps(base_url, args.seconds, args.concurrency, f"{tmp}/{r}"))
            )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}"
    )
    print(f"client on one CPU, emulator on another; concurrency {args.concurrency}")
    print(f"bare httpx loop   {mean(bare_runs):8,.0f} requests/s  {[round(r) for r in bare_runs]}")
    print(
        f"fanout engine     {mean(engine_runs):8,.0f} requests/s  {[round(r) for r in engine_runs]}"
    )
    print(
        f"fanout + traces   {mean(traced_runs):8,.0f} requests/s  {[round(r) for r in traced_runs]}"
    )
    print(f"ratio engine/bare {mean(engine_runs) / mean(bare_runs):8.3f}")
    print(f"ratio traced/engine {mean(traced_runs) / mean(engine_runs):6.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
