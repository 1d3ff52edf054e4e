"""MCP tools on the Ray backend: the config reaches the workers, and each worker starts
and holds its own session with the server (never the driver's)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from support_mcp import agent, effects, kv_config, lookup_prompt, stdio_server

from fanout.distributed import RayEngine

pytestmark = pytest.mark.usefixtures("ray_cluster")


async def test_each_worker_holds_its_own_mcp_session(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config = kv_config(stdio_server(state, delay_ms=20, max_concurrency=2))
    keys = [f"k{i}" for i in range(40)]
    async with RayEngine(config, workers=2) as engine:
        results = await asyncio.gather(
            *(engine.run(agent(), {"task": lookup_prompt(k)}, record_key=k) for k in keys)
        )
        info = await engine.worker_info()
    assert all(r.ok for r in results), [r.error_message for r in results if not r.ok][:3]
    assert sorted(effects(state)) == sorted(f"lookup {k}" for k in keys)
    started = {int(p.name.split(".")[1]) for p in state.glob("started.*")}
    workers = {int(w["pid"]) for w in info}  # type: ignore[call-overload]
    assert len(started) == len(workers) == 2  # one server process per worker
    assert os.getpid() not in workers
