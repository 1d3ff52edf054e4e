"""The MCP tests' parts: the local server (tests/mcp_server.py) over stdio or HTTP, its
config, an agent DAG over it, and what the server counted."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from support import free_port

from fanout import DAG, Config, mcp, parse_config
from fanout.trace import trace_files

SERVER = Path(__file__).with_name("mcp_server.py")


def stdio_server(state: Path, delay_ms: float = 5, **options: object) -> dict[str, object]:
    """``[mcp.kv]`` for the test server over stdio, counting into ``state``."""
    env = {"MCP_STATE": str(state), "MCP_DELAY_MS": str(delay_ms)}
    extra = options.pop("env", {})
    assert isinstance(extra, dict)
    return {
        "command": sys.executable,
        "args": [str(SERVER), "stdio"],
        "env": env | extra,
        **options,
    }


def kv_config(server: dict[str, object], **top: object) -> Config:
    """One sim model (``fast``, 1 ms) and the MCP server ``kv``."""
    return parse_config(
        {
            "providers": {"sim": {"kind": "sim", "latency_ms": 1, "jitter_sigma": 0}},
            "models": {"fast": {"provider": "sim", "model": "sim-small"}},
            "mcp": {"kv": server},
            **top,
        }
    )


def agent(**source: object) -> DAG:
    """An llm node ``agent`` whose model may call the kv server's tools."""
    dag = DAG("agent")
    dag.input("task")
    tools = [mcp("kv", **source)]  # type: ignore[arg-type]
    dag.output(answer=dag.llm("fast", "{task}", tools=tools, name="agent"))
    return dag


def lookup_prompt(key: str) -> str:
    return f'[sim:tools=lookup({{"key": "{key}"}})] Look up {key}.'


def effects(state: Path) -> list[str]:
    log = state / "effects.log"
    return log.read_text().splitlines() if log.exists() else []


def peak(state: Path) -> int:
    """The most calls any of the server's processes had in flight at once."""
    return max((int(p.read_text()) for p in state.glob("peak.*")), default=0)


def tool_rows(traces: Path) -> list[dict[str, object]]:
    """The trace's tool attempt rows, read back from its Parquet files."""
    files = trace_files(traces)
    table = pa.concat_tables([pq.read_table(p) for p in files.parts])
    return [
        r
        for r in table.to_pylist()
        if r["record_type"] == "attempt" and str(r["span_name"]).startswith("execute_tool ")
    ]


@contextmanager
def http_server(state: Path, delay_ms: float = 5, port: int | None = None) -> Iterator[str]:
    """The test server over streamable HTTP on a loopback port; yields its URL."""
    port = port or free_port()
    env = {**os.environ, "MCP_STATE": str(state), "MCP_DELAY_MS": str(delay_ms)}
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # up when it accepts a connection (a loaded machine starts slowly)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the MCP test server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
