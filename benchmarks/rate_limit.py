"""How fast fanout gets through a provider's rate limit, burst included, and how many 429s it draws.

Starts ``fanout sim-server`` as a separate process (the other core) with the scenario's
limits, runs N classify requests (prompt ~200 tokens, max_tokens 50, 300 ms mean
latency) all queued at once through one engine, and prints for each scenario:

  minimum  the bucket-aware minimum time: a provider's bucket starts full, so
           max((N - B_req) / r_req, (N * c - B_tok) / r_tok) + mean latency,
           with r the refill rate (the limit per second), B the bucket's capacity
           (r * its window: 60 s where the scenario says so, as OpenAI's buckets
           behave), c the tokens the provider counts per request (prompt + completion)
  wall     from the first request queued to the last answer
  ratio    minimum / wall (1.0: the provider's ceiling, burst included)
  429s     429 answers / all requests the provider saw (its own counts)
  correct  records whose answer is the right label

Scenarios (the emulator's bucket; what the config states):
  A  3,000/min, 60 s bucket; configured 3,000/min
  B  1,500/min, 60 s bucket; configured 3,000/min (the real limit is half: learn it)
  C  3,000/min enforced per second (1 s bucket); configured 3,000/min
  D  3,000/min, 60 s bucket; nothing configured (the headers say it all)
  E  3,000/min and tokens/min for 20 requests/s, 60 s buckets; both configured
  F  1,500/min per second, no limit headers; configured 3,000/min (429s teach it)
  G  3,000/min per second, no limit headers; nothing configured (429s alone)
Targets (A-E): ratio >= 0.97 in every scenario, <= 0.5% 429s, every record correct.
F and G (not run by default) measure what 429s alone can teach.

``--ray N`` runs the same on a local Ray with N workers sharing the limit through the
quota coordinator (target on A: ratio >= 0.95, <= 1% 429s).

Run: python benchmarks/rate_limit.py [--scenarios A,B,C,D,E] [--requests 5000] [--ray N]
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

TEXTS = [
    "great product, I love it",
    "arrived broken and late, terrible",
    "it is a chair",
    "thanks, excellent service",
    "worst purchase, I want a refund",
]
# neutral words to bring the prompt to ~200 tokens (chars / 4, as providers estimate)
FILLER = " It came in a box with a manual, four legs, a seat and a back." * 11
MAX_TOKENS = 50
LATENCY_MS = 300.0
JITTER = 0.2


@dataclass(frozen=True)
class Scenario:
    name: str
    provider_rpm: float
    provider_tpm: float | None
    bucket_s: float
    configured_rpm: float | None
    configured_tpm: float | None
    limit_headers: bool = True  # x-ratelimit-limit-* (F, G: 429s alone teach the limit)


def classify_dag() -> DAG:
    dag = DAG("classify")
    dag.input("text", type=str)
    dag.output(
        label=dag.llm(
            "fast",
            "Classify the sentiment of this review as positive, negative or neutral. "
            "Answer with the label only. Review: {text}",
            max_tokens=MAX_TOKENS,
            name="label",
        )
    )
    return dag


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def emulator(scenario: Scenario) -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "fanout", "sim-server", "--port", str(port)]
    args += ["--rpm", str(scenario.provider_rpm), "--burst-s", str(scenario.bucket_s)]
    if scenario.provider_tpm:
        args += ["--tpm", str(scenario.provider_tpm)]
    args += ["--latency-ms", str(LATENCY_MS), "--jitter-sigma", str(JITTER)]
    if not scenario.limit_headers:
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


def minimum_s(scenario: Scenario, requests: int, tokens_per_request: float) -> float:
    """The bucket-aware minimum (see the module's docstring)."""
    r_req = scenario.provider_rpm / 60
    need = (requests - r_req * scenario.bucket_s) / r_req
    if scenario.provider_tpm:
        r_tok = scenario.provider_tpm / 60
        need = max(need, (requests * tokens_per_request - r_tok * scenario.bucket_s) / r_tok)
    mean_latency_s = LATENCY_MS / 1000 * 2.718281828 ** (JITTER**2 / 2)
    return max(0.0, need) + mean_latency_s


def config_for(scenario: Scenario, root: str, in_flight: int) -> Config:
    provider: dict[str, object] = {
        "kind": "openai",
        "base_url": f"{root}/v1",
        "requests_per_min": scenario.configured_rpm,
        "tokens_per_min": scenario.configured_tpm,
        "max_concurrency": in_flight,
        "retry": {"max_attempts": 20, "max_elapsed_s": 600},
    }
    return parse_config(
        {
            "providers": {"emu": provider},
            "models": {"fast": {"provider": "emu", "model": "sim-small"}},
        }
    )


async def run_scenario(
    scenario: Scenario, requests: int, in_flight: int, ray_workers: int | None
) -> str:
    dag = classify_dag()
    with emulator(scenario) as root:
        config = config_for(scenario, root, in_flight)
        async with make_engine(config, ray_workers) as engine, httpx.AsyncClient() as http:
            await http.post(f"{root}/stats/reset")
            window = asyncio.Semaphore(in_flight)

            async def one(i: int) -> bool:
                async with window:
                    text = f"{TEXTS[i % len(TEXTS)]} (review {i}).{FILLER}"
                    result = await engine.run(dag, {"text": text})
                    return result.ok and result.outputs["label"] == sentiment(text)

            start = time.monotonic()
            correct = await asyncio.gather(*(one(i) for i in range(requests)))
            wall = time.monotonic() - start
            stats = (await http.get(f"{root}/stats")).json()
    seen = stats["accepted"] + stats["limited"]
    per_request = stats["tokens"] / max(1, stats["accepted"])
    least = minimum_s(scenario, requests, per_request)
    ok = "all correct" if all(correct) else f"{len(correct) - sum(correct)} WRONG"
    return (
        f"{scenario.name}: minimum {least:6.1f} s, wall {wall:6.1f} s, ratio {least / wall:5.3f}, "
        f"429s {stats['limited'] / max(1, seen):6.2%} ({stats['limited']}/{seen}), "
        f"{len(correct)} records {ok} (c = {per_request:.0f} tokens/request)"
    )


def scenarios() -> dict[str, Scenario]:
    tpm_e = 20 * (200 + MAX_TOKENS) * 60  # 20 requests/s of prompt + max_tokens
    return {
        "A": Scenario("A", 3000, None, 60.0, 3000, None),
        "B": Scenario("B", 1500, None, 60.0, 3000, None),
        "C": Scenario("C", 3000, None, 1.0, 3000, None),
        "D": Scenario("D", 3000, None, 60.0, None, None),
        "E": Scenario("E", 3000, tpm_e, 60.0, 3000, tpm_e),
        "F": Scenario("F", 1500, None, 1.0, 3000, None, limit_headers=False),
        "G": Scenario("G", 3000, None, 1.0, None, None, limit_headers=False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="A,B,C,D,E", help="any of A-G")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=256, help="requests in flight at most")
    parser.add_argument("--ray", type=int, metavar="N", help="on local Ray, N workers")
    args = parser.parse_args()
    known = scenarios()
    names = args.scenarios.split(",")
    if unknown := [n for n in names if n not in known]:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; pick from {', '.join(known)}")
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu
        )
    print(f"machine: {cpu}, {os.cpu_count()} cpus, python {platform.python_version()}")
    where = f"Ray, {args.ray} workers" if args.ray else "one process"
    print(
        f"{args.requests} requests, {LATENCY_MS:.0f} ms latency (lognormal sigma {JITTER}), "
        f"max_tokens {MAX_TOKENS}, at most {args.in_flight} in flight, {where}"
    )
    for name in names:
        line = asyncio.run(run_scenario(known[name], args.requests, args.in_flight, args.ray))
        print(line, flush=True)


if __name__ == "__main__":
    main()
