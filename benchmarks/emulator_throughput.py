"""How many requests/s the provider emulator serves per CPU core.

Starts ``fanout sim-server`` (zero latency, no limits) pinned to one CPU, drives it
from this process (pinned to another) with a bare httpx loop, and reads the
server's CPU time from /proc: requests served / server CPU seconds is its ceiling
on one fully used core. The benchmarks that use the emulator stay well below it.
Run: python benchmarks/emulator_throughput.py [--seconds 5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform

import httpx
from overhead import bare, emulator, pin


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    pin(0)
    with emulator() as (root, pid):
        asyncio.run(bare(f"{root}/v1", 1.0, args.concurrency))  # warm-up
        before = httpx.get(f"{root}/stats").json()["accepted"]
        cpu0 = cpu_seconds(pid)
        client_rps = asyncio.run(bare(f"{root}/v1", args.seconds, args.concurrency))
        cpu1 = cpu_seconds(pid)
        served = httpx.get(f"{root}/stats").json()["accepted"] - before
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}"
    )
    print(f"served {served} requests at {client_rps:,.0f}/s using {cpu1 - cpu0:.2f} server CPU s")
    print(f"emulator ceiling  {served / (cpu1 - cpu0):8,.0f} requests/s per fully used core")


if __name__ == "__main__":
    main()
