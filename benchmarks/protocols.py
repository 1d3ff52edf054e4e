"""What each wire protocol costs the client per call: Anthropic (and Azure, Bedrock,
Gemini) against OpenAI, through ``Engine.run`` against the instant emulator.

Starts ``fanout sim-server`` (zero latency, no limits) pinned to the last CPU, pins this
process (the client) to CPU 0, and runs, round after round in one run, N workers calling
``Engine.run`` of a one-node classify DAG (traced to Parquet, as a service runs) with the
model alias on each protocol's provider in turn: the same DAG, the same emulator, only
the wire format differs (Bedrock's calls are also signed with SigV4 by botocore). Prints
calls/s, the client's CPU µs per call (best round of each) and the emulator's CPU share
(it must stay under one core, or it is what the figures measure), then each protocol's
CPU per call over OpenAI's.

Run: python benchmarks/protocols.py [--seconds 3] [--concurrency 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batch_1m import machine
from overhead import PROMPT, TEXTS, Row, emulator, measure, pin, workers

from fanout import DAG, Engine, parse_config
from fanout.cli._loop import run as cli_run

PROTOCOLS = ("openai", "anthropic", "azure", "bedrock", "gemini")


def config(protocol: str, root: str, concurrency: int) -> Any:
    table: dict[str, object] = {
        "openai": {"kind": "openai", "base_url": f"{root}/v1"},
        "anthropic": {"kind": "anthropic", "base_url": f"{root}/v1", "api_key_env": "BENCH_KEY"},
        "azure": {"kind": "azure", "endpoint": root, "api_key_env": "BENCH_KEY"},
        "bedrock": {"kind": "bedrock", "region": "us-east-1", "base_url": root},
        "gemini": {"kind": "gemini", "base_url": f"{root}/v1beta", "api_key_env": "BENCH_KEY"},
    }[protocol]
    return parse_config(
        {
            "providers": {protocol: {**table, "max_concurrency": concurrency}},  # type: ignore[dict-item]
            "models": {"fast": {"provider": protocol, "model": "sim-small"}},
        }
    )


async def engine_loop(protocol: str, root: str, seconds: float, n: int, traces: Path) -> int:
    dag = DAG("classify")
    dag.input("text")
    dag.output(label=dag.llm("fast", PROMPT, max_tokens=5))
    async with Engine(config(protocol, root, n), traces=traces) as engine:

        async def one(w: int, i: int) -> None:
            result = await engine.run(dag, {"text": f"{TEXTS[(w + i) % 3]} #{w}-{i}"})
            assert result.ok, result.error_message

        return await workers(n, seconds, one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per timed loop")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("FANOUT_TRACE_KEY", "benchmark-key")
    os.environ.update(
        BENCH_KEY="bench-key-0123456789",
        AWS_ACCESS_KEY_ID="AKIABENCHMARK0000000",
        AWS_SECRET_ACCESS_KEY="benchmark/secret/key/0123456789",
        AWS_EC2_METADATA_DISABLED="true",
    )
    rows = {p: Row(p, [], [], []) for p in PROTOCOLS}
    with emulator() as (root, pid), tempfile.TemporaryDirectory() as tmp:
        pin(0)
        cli_run(engine_loop("openai", root, 1.0, args.concurrency, Path(tmp) / "warm"))
        for r in range(args.rounds):
            for protocol in PROTOCOLS:
                traces = Path(tmp) / f"{protocol}-{r}"
                run: Callable[[], int] = lambda: cli_run(  # noqa: E731  # measured at once
                    engine_loop(protocol, root, args.seconds, args.concurrency, traces)  # noqa: B023
                )
                measure(rows[protocol], pid, run)
    print(f"machine: {machine()}")
    print(f"Engine.run, one-node classify DAG, traced; client on CPU 0, concurrency "
          f"{args.concurrency}, {args.rounds} rounds of {args.seconds:g} s")  # fmt: skip
    print(f"{'':10}{'best/s':>8}  {'µs CPU/call':>11}  {'emulator cores':>14}  rounds")
    for row in rows.values():
        print(
            f"{row.label:10}{row.best():8,.0f}  {min(row.cpu_us):11.0f}  "
            f"{max(row.emulator_cores):14.2f}  {[round(x) for x in row.rates]}"
        )
    base = min(rows["openai"].cpu_us)
    for protocol in PROTOCOLS[1:]:
        extra = min(rows[protocol].cpu_us) - base
        print(f"{protocol} over openai: {min(rows[protocol].cpu_us) / base:.2f}x CPU per call "
              f"({extra:+.0f} µs)")  # fmt: skip


if __name__ == "__main__":
    main()
