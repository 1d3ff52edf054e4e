"""Soak: many calls against an instant local server; no call may hang or time out.

Starts ``fanout sim-server`` (zero latency, no limits) in its own process and runs the
``classify`` example as a batch job (``run_file``) over N records with a wide window,
timing every HTTP call at the transport. Prints the calls, the wall time, the rate,
the slowest call, how many took over 1 s, and how many timed out or were retried.

Before the fix (httpx's pool starving a queued request) a 30,000-record run at 1,000
records in flight had ~30 calls over 1 s, the worst ~30 s (the pool timeout), and
the circuit opened on the timeouts; after it, none over 1 s.
Run: python benchmarks/soak.py [--records 30000] [--in-flight 1000] [--timeout-s 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fanout import DAG, Engine, parse_config
from fanout.batch import run_file


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def classify() -> DAG:
    dag = DAG("classify")
    dag.input("text", type=str)
    dag.output(label=dag.llm("fast", "Classify: {text}", max_tokens=5, name="label"))
    return dag


class Timed(httpx.AsyncHTTPTransport):
    """The transport every client uses, timing each request at the wire."""

    durations: list[float] = []  # noqa: RUF012  (one list for every client: the point)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.monotonic()
        try:
            return await super().handle_async_request(request)
        finally:
            Timed.durations.append(time.monotonic() - start)


async def soak(
    base_url: str, records: Path, out: Path, in_flight: int, timeout_s: float
) -> dict[str, object]:
    cfg = parse_config(
        {
            "providers": {"emu": {"kind": "openai", "base_url": base_url, "timeout_s": timeout_s}},
            "models": {"fast": {"provider": "emu", "model": "sim-small"}},
        }
    )
    original = httpx.AsyncClient.__init__

    def timed_init(self: httpx.AsyncClient, *args: object, **kwargs: object) -> None:
        if kwargs.get("transport") is None:
            kwargs["transport"] = Timed(limits=kwargs.get("limits"))  # type: ignore[arg-type]
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    httpx.AsyncClient.__init__ = timed_init  # type: ignore[method-assign]
    try:
        async with Engine(cfg) as engine:
            start = time.monotonic()
            stats = await run_file(engine, classify(), records, out, max_in_flight=in_flight)
            wall = time.monotonic() - start
    finally:
        httpx.AsyncClient.__init__ = original  # type: ignore[method-assign]
    attempts = pc.sum(pq.read_table(out / "results", columns=["attempts"])["attempts"]).as_py()
    durations = sorted(Timed.durations)
    return {
        "records": stats.records,
        "ok": stats.ok,
        "calls": len(durations),
        "retried": attempts - stats.records,
        "wall_s": round(wall, 1),
        "calls_per_s": round(len(durations) / wall),
        "p99_ms": round(durations[int(len(durations) * 0.99)] * 1000, 1),
        "max_s": round(durations[-1], 2),
        "over_1s": sum(d > 1.0 for d in durations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "fanout", "sim-server", "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/stats").raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        with tempfile.TemporaryDirectory() as tmp:
            records = Path(tmp) / "in.jsonl"
            with records.open("w", encoding="utf-8") as file:
                for i in range(args.records):
                    file.write(json.dumps({"text": f"review {i}"}) + "\n")
            figures = asyncio.run(soak(f"http://127.0.0.1:{port}/v1", records, Path(tmp) / "out",
                                       args.in_flight, args.timeout_s))  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, Python {platform.python_version()}")
    for name, value in figures.items():
        print(f"{name:>12}: {value}")


if __name__ == "__main__":
    main()
