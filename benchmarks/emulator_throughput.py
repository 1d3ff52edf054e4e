"""How many requests/s the provider emulator serves per CPU core.

Starts ``fanout sim-server`` (zero latency, no limits) pinned to one CPU, drives it
from this process (pinned to another) with a bare aiohttp loop on uvloop, and reads the
server's CPU time from /proc: requests served / server CPU seconds is its ceiling
on one fully used core. The benchmarks that use the emulator stay well below it.
Run: python benchmarks/emulator_throughput.py [--seconds 5] [--concurrency 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import httpx
from overhead import bare_aiohttp, cpu_seconds, emulator, pin, uvloop_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    with emulator() as (root, pid):
        pin(0)  # after the emulator started: its process is pinned apart
        uvloop_run(bare_aiohttp(f"{root}/v1", 1.0, args.concurrency))  # warm-up
        before = httpx.get(f"{root}/stats").json()["accepted"]
        cpu0, wall = cpu_seconds(pid), time.perf_counter()
        done = uvloop_run(bare_aiohttp(f"{root}/v1", args.seconds, args.concurrency))
        client_rps = done / (time.perf_counter() - wall)
        cpu1 = cpu_seconds(pid)
        served = httpx.get(f"{root}/stats").json()["accepted"] - before
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}"
    )
    print(f"served {served} requests at {client_rps:,.0f}/s using {cpu1 - cpu0:.2f} server CPU s")
    print(f"emulator ceiling  {served / (cpu1 - cpu0):8,.0f} requests/s per fully used core")


if __name__ == "__main__":
    main()
