"""End-to-end latency of ``fanout serve`` under open-loop load, against the critical path.

Starts ``fanout serve examples/pipelines/map_reduce.py:dag`` in its own process on the
built-in simulated provider (``latency_ms`` per call, here 100 ms) or, with
``--provider http``, on the project's emulator over HTTP (``fanout sim-server`` in a
process of its own, the same latency, jitter and tail; every call crosses the
OpenAI-compatible provider's HTTP path, as it would to a vendor), then sends requests
with Poisson arrivals (``--rate`` per second for ``--duration`` seconds, open loop: a
slow answer never delays the next request) from this process. Each request's text has
``--sentences`` sentences (100), so one request is 100 ``fast`` calls in the map (at
most 8 at once: the example's ``concurrency=8``) and one ``smart`` summary call.

  critical path = (ceil(sentences / 8) map waves + 1 summary) x latency_ms
                  the sum of provider latencies along the longest chain

Scenarios (each in a fresh server):
  base         100 ms per call, no jitter          target p50 <= 1.15x, p99 <= 1.5x crit
  tail         heavy tail: --tail-rate of calls (0.5%) take --tail-ms (2 s) more, jitter 0.1;
               40% of requests meet at least one such call; no hedging
  tail-hedged  the same with [models.fast.hedge] and [models.smart.hedge] (p95,
               --hedge-max-extra): both the map's calls and the summary are hedged
               target: p99 at least 30% below `tail`

  over HTTP    target p50 <= 1.1x, p99 <= 1.3x crit in `base` (20 requests/s: ~2,000 calls/s)

Run: python benchmarks/service_latency.py [--rate 20] [--duration 20] [--scenarios base,tail,...]
     [--provider sim|http]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
MAP_CONCURRENCY = 8  # examples/pipelines/map_reduce.py
WORDS = ["great", "awful", "fine", "slow", "lovely", "broken", "cheap", "friendly", "cold"]


@dataclass(frozen=True)
class Scenario:
    name: str
    jitter: float
    tail: bool
    hedge: bool


SCENARIOS = {
    "base": Scenario("base", 0.0, tail=False, hedge=False),
    "tail": Scenario("tail", 0.1, tail=True, hedge=False),
    "tail-hedged": Scenario("tail-hedged", 0.1, tail=True, hedge=True),
}


def config_toml(args: argparse.Namespace, scenario: Scenario, emulator: str | None) -> str:
    tail = (
        f"tail_rate = {args.tail_rate}\ntail_latency_ms = {args.tail_ms}\n" if scenario.tail else ""
    )
    provider = f"""[providers.sim]
kind = "sim"
latency_ms = {args.latency_ms}
jitter_sigma = {scenario.jitter}
max_concurrency = 100000
{tail}"""
    if emulator is not None:  # the same latency model, served over HTTP by the emulator
        provider = f"""[providers.sim]
kind = "openai"
base_url = "{emulator}/v1"
max_concurrency = 4096
"""
    hedge = {
        alias: f"\n[models.{alias}.hedge]\nquantile = 0.95\nmax_extra = {args.hedge_max_extra}\n"
        if scenario.hedge
        else ""
        for alias in ("fast", "smart")
    }
    return f"""
{provider}
[models.fast]
provider = "sim"
model = "sim-small"
{hedge["fast"]}
[models.smart]
provider = "sim"
model = "sim-large"
{hedge["smart"]}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def text_for(rng: random.Random, sentences: int) -> str:
    # Every request's sentences differ: the simulator's replies and jitter follow the prompt.
    return " ".join(
        f"Item {i} was {rng.choice(WORDS)} and {rng.choice(WORDS)} ({rng.getrandbits(32):x})."
        for i in range(sentences)
    )


async def load(url: str, args: argparse.Namespace, seed: int) -> tuple[list[float], dict[str, int]]:
    rng = random.Random(seed)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(text: str) -> None:
            start = time.perf_counter()
            try:
                reply = await client.post(
                    "/v1/pipelines/map_reduce/runs", json={"inputs": {"text": text}}
                )
                body = reply.json()
                status = body["status"] if reply.status_code == 200 else str(reply.status_code)
                if status not in ("ok", str(reply.status_code)):
                    status = f"{status} ({body['error_type']}: {body['error_message']})"
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1

        # warm-up (not measured): imports, connections, and each hedged alias's learned p95
        # (the summary's alias sees one call per request: 20 before it hedges)
        for _ in range(3):
            await asyncio.gather(*(one(text_for(rng, args.sentences)) for _ in range(8)))
        latencies.clear()
        statuses.clear()
        tasks = []
        start = time.perf_counter()
        next_at = 0.0
        while next_at < args.duration:
            delay = start + next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(text_for(rng, args.sentences))))
            next_at += rng.expovariate(args.rate)
        await asyncio.gather(*tasks)
    return latencies, statuses


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def wait_until_up(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.1)


@contextmanager
def emulator(args: argparse.Namespace, scenario: Scenario) -> Iterator[str | None]:
    """``fanout sim-server`` with the scenario's latency model (``--provider http``)."""
    if args.provider != "http":
        yield None
        return
    port = free_port()
    tail = ["--tail-rate", str(args.tail_rate), "--tail-latency-ms", str(args.tail_ms)]
    process = subprocess.Popen(
        [
            sys.executable, "-m", "fanout", "sim-server", "--port", str(port),
            "--latency-ms", str(args.latency_ms), "--jitter-sigma", str(scenario.jitter),
            *(tail if scenario.tail else []),
        ],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    root = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{root}/stats", process, "fanout sim-server")
        yield root
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_scenario(args: argparse.Namespace, scenario: Scenario) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, emulator(args, scenario) as emulator_url:
        config = Path(tmp) / "fanout.toml"
        config.write_text(config_toml(args, scenario, emulator_url))
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fanout",
                "serve",
                "examples/pipelines/map_reduce.py:dag",
                "--config",
                str(config),
                "--port",
                str(port),
                "--no-auth",
            ],
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{url}/healthz", server, "fanout serve")
            cpu_before, wall_before = cpu_s(server.pid), time.perf_counter()
            latencies, statuses = asyncio.run(load(url, args, seed=args.seed))
            server_cores = (cpu_s(server.pid) - cpu_before) / (time.perf_counter() - wall_before)
            metrics = httpx.get(f"{url}/metrics").text
        finally:
            server.terminate()
            server.wait(timeout=30)
    hedges = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("fanout_hedges_total{")
    )
    delays = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("fanout_hedge_delay_seconds{")
    ]
    return {
        "server_cores": server_cores,
        "hedge_delay_ms": max(delays) * 1000 if delays else 0.0,
        "requests": len(latencies),
        "ok": statuses.get("ok", 0),
        "other": ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()) if k != "ok"),
        "p50": quantile(latencies, 0.50),
        "p95": quantile(latencies, 0.95),
        "p99": quantile(latencies, 0.99),
        "hedges": hedges,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per scenario")
    parser.add_argument("--sentences", type=int, default=100, help="map calls per request")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--tail-rate", type=float, default=0.005, help="share of slow calls")
    parser.add_argument("--tail-ms", type=float, default=2000.0, help="added to a slow call")
    parser.add_argument("--hedge-max-extra", type=float, default=0.1)
    parser.add_argument("--scenarios", default="base,tail,tail-hedged")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--provider", choices=("sim", "http"), default="sim",
        help="the in-process simulated provider, or the emulator over HTTP",
    )  # fmt: skip
    args = parser.parse_args()
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {sorted(SCENARIOS)}")
    waves = math.ceil(args.sentences / MAP_CONCURRENCY)
    critical_s = (waves + 1) * args.latency_ms / 1000
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start"
    )
    print(
        f"map_reduce: {args.sentences} map calls ({waves} waves of {MAP_CONCURRENCY}) + 1 summary, "
        f"{args.latency_ms:g} ms per call; critical path {critical_s * 1000:.0f} ms; "
        f"Poisson arrivals at {args.rate:g}/s for {args.duration:g} s; provider: "
        + ("the emulator over HTTP" if args.provider == "http" else "in-process sim")
    )
    results = {}
    for name in names:
        r = results[name] = run_scenario(args, SCENARIOS[name])
        calls = r["requests"] * (args.sentences + 1)
        print(
            f"{name:12} requests {r['requests']:4.0f} (ok {r['ok']:4.0f})  "
            f"p50 {r['p50'] * 1000:6.0f} ms ({r['p50'] / critical_s:.2f}x)  "
            f"p95 {r['p95'] * 1000:6.0f} ms ({r['p95'] / critical_s:.2f}x)  "
            f"p99 {r['p99'] * 1000:6.0f} ms ({r['p99'] / critical_s:.2f}x)  "
            f"hedges {r['hedges']:.0f} ({r['hedges'] / calls:.1%} of calls"
            + (f", after {r['hedge_delay_ms']:.0f} ms" if r["hedges"] else "")
            + f")  server CPU {r['server_cores']:.2f} cores"
            + (f"  not ok: {r['other']}" if r["other"] else ""),
            flush=True,
        )
    if "tail" in results and "tail-hedged" in results:
        cut = 1 - results["tail-hedged"]["p99"] / results["tail"]["p99"]
        print(f"hedging: p99 {cut:.0%} lower than without (target >= 30%)")


if __name__ == "__main__":
    main()
