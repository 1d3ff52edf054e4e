"""The service with sessions: a run request carries ``session_id``; a held session is a 409."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from support import sim_config

from fanout import DAG, Engine, RunResult
from fanout.service import ServiceServer, build_app

RUNS = "/v1/pipelines/chat/runs"


class Count(BaseModel):
    turns: int = 0


def chat() -> DAG:
    dag = DAG("chat")
    question = dag.input("question")
    session = dag.session(user="question", answer="answer", state=Count)
    answer = dag.llm("fast", "{question}", conversation=True, max_tokens=8)
    state = dag.tool(lambda c, _q: Count(turns=c.turns + 1), session.state, question, inline=True)
    dag.output(answer=answer, state=state)
    return dag


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServiceServer]:
    engine = Engine(sim_config(), store=tmp_path)
    with ServiceServer(
        lambda: build_app({"chat": chat()}, engine, tokens=None), close=engine.aclose
    ) as srv:
        yield srv


def test_runs_of_one_session_continue_it(server: ServiceServer, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        first = c.post(RUNS, json={"inputs": {"question": "hi"}, "session_id": "s"})
        second = c.post(RUNS, json={"inputs": {"question": "again"}, "session_id": "s"})
        alone = c.post(RUNS, json={"inputs": {"question": "hi"}})
        bad = c.post(RUNS, json={"inputs": {"question": "hi"}, "session_id": ""})
    assert first.status_code == second.status_code == alone.status_code == 200
    assert first.json()["outputs"]["state"] == {"turns": 1}
    assert second.json()["outputs"]["state"] == {"turns": 2}
    assert alone.json()["outputs"]["state"] == {"turns": 1}
    assert bad.status_code == 422


def test_a_session_in_use_gets_409_and_is_free_again_after(
    server: ServiceServer, tmp_path: Path
) -> None:
    async def go() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            held = asyncio.ensure_future(
                c.post(
                    RUNS,
                    json={
                        "inputs": {"question": "[sim:latency=30000] slow"},
                        "session_id": "s",
                        "deadline_ms": 3000,
                    },
                )
            )
            assert await asyncio.to_thread(leased, tmp_path / "sessions.db", "s")
            busy = await c.post(RUNS, json={"inputs": {"question": "x"}, "session_id": "s"})
            first = await held
            after = await c.post(RUNS, json={"inputs": {"question": "y"}, "session_id": "s"})
            return busy, first, after

    busy, first, after = asyncio.run(go())
    assert busy.status_code == 409
    assert busy.json()["error"]["type"] == "session_busy"
    assert "'s' is in use by another run" in busy.json()["error"]["message"]
    assert first.status_code == 200 and first.json()["status"] == "partial"
    assert after.status_code == 200
    assert after.json()["outputs"]["state"] == {"turns": 1}  # the cut run saved nothing


def leased(db: Path, session_id: str, timeout_s: float = 20.0) -> bool:
    """Wait until a run holds ``session_id`` (read from the store's file)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if db.exists():
            with sqlite3.connect(db) as conn:
                row = conn.execute(
                    "SELECT lease_owner FROM sessions WHERE session_id = ?", (session_id,)
                ).fetchone()
            if row is not None and row[0] is not None:
                return True
        time.sleep(0.05)
    return False


class NoSessions:
    """A runner that keeps no sessions (its ``run`` takes no ``session_id``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.validate, self.limiter_states = engine.validate, engine.limiter_states
        self.hedges, self.aclose = engine.hedges, engine.aclose

    async def run(self, dag: DAG, inputs: Mapping[str, object], **options: Any) -> RunResult:
        return await self.engine.run(dag, inputs, **options)


def test_a_runner_without_sessions_refuses_a_session_id_with_422(tmp_path: Path) -> None:
    engine = Engine(sim_config(), store=tmp_path)
    runner = NoSessions(engine)
    make = lambda: build_app({"chat": chat()}, runner, tokens=None)  # noqa: E731
    with ServiceServer(make, close=engine.aclose) as srv, httpx.Client(base_url=srv.url) as c:
        refused = c.post(RUNS, json={"inputs": {"question": "hi"}, "session_id": "s"})
        plain = c.post(RUNS, json={"inputs": {"question": "hi"}})
    assert refused.status_code == 422
    assert "keeps no sessions" in refused.json()["error"]["message"]
    assert plain.status_code == 200
