"""MCP tool calls at scale: agents whose one tool call goes to a local MCP server.

Each run is one llm node (simulated model, zero latency) that calls the test server's
``lookup`` tool once and answers. The server (tests/mcp_server.py, the SDK's
MCPServer) answers at once (MCP_DELAY_MS=0), so the time is the MCP round trip:
fanout's hub (limiter, circuit, schema check), the SDK client, the transport and the
server. Prints tool calls/s per transport and concurrency cap, and how many calls
the server had in flight at most (its own count: it never passes the cap).

Run: python benchmarks/mcp_tools.py [--runs 2000] [--caps 1,8,32]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support_mcp import agent, http_server, kv_config, lookup_prompt, peak, stdio_server

from fanout import Engine


async def measure(server: dict[str, object], runs: int) -> float:
    dag = agent()
    gate = asyncio.Semaphore(256)

    async def one(i: int) -> None:
        async with gate:
            result = await engine.run(dag, {"task": lookup_prompt(f"k{i}")})
            assert result.ok, result.error_message

    async with Engine(kv_config(server)) as engine:
        await engine.run(dag, {"task": lookup_prompt("warm-up")})  # start, list tools
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(runs)))
        return runs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--caps", default="1,8,32")
    args = parser.parse_args()
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, Python {platform.python_version()}, {args.runs} runs each")
    print(f"{'transport':<10} {'cap':>4} {'tool calls/s':>13} {'server peak':>12}")
    for transport in ("stdio", "http"):
        for cap in (int(c) for c in args.caps.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                state = Path(tmp)
                served = http_server(state, delay_ms=0) if transport == "http" else nullcontext("")
                with served as url:
                    server = (
                        stdio_server(state, delay_ms=0, max_concurrency=cap)
                        if transport == "stdio"
                        else {"url": url, "max_concurrency": cap}
                    )
                    rate = asyncio.run(measure(server, args.runs))
                print(f"{transport:<10} {cap:>4} {rate:>13.0f} {peak(state):>12}")


if __name__ == "__main__":
    main()
