"""Reviews through the service: list the pending ones, decide one, get the resumed run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import sim_config

from fanout import DAG, Engine
from fanout.service import ServiceServer, build_app


def reviewed() -> DAG:
    dag = DAG("reviewed")
    dag.input("topic")
    draft = dag.llm("fast", "Write a line about {topic}.", name="draft", max_tokens=8)
    checked = dag.review(draft, instructions="Is it polite?", name="check")
    dag.output(checked=checked, draft=draft)
    return dag


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServiceServer]:
    engine = Engine(sim_config(), store=tmp_path)
    with ServiceServer(
        lambda: build_app({"reviewed": reviewed()}, engine, tokens=None), close=engine.aclose
    ) as srv:
        yield srv


def test_a_paused_run_is_listed_decided_and_resumed(server: ServiceServer) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        paused = c.post("/v1/pipelines/reviewed/runs", json={"inputs": {"topic": "tea"}})
        assert paused.status_code == 200, paused.text
        assert paused.json()["status"] == "waiting_for_review"
        (pending,) = c.get("/v1/reviews", params={"status": "pending"}).json()
        assert pending["instructions"] == "Is it polite?" and pending["status"] == "pending"
        review_id = pending["review_id"]

        missing = c.post("/v1/reviews/nope/approve", json={})
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "review_not_found"
        no_value = c.post(f"/v1/reviews/{review_id}/edit", json={})
        assert no_value.status_code == 422

        edited = c.post(f"/v1/reviews/{review_id}/edit", json={"value": "kind", "by": "ann"})
        assert edited.status_code == 200, edited.text
        body = edited.json()
        assert body["review"]["status"] == "edited" and body["review"]["decided_by"] == "ann"
        assert body["result"]["status"] == "ok"
        assert body["result"]["outputs"]["checked"] == "kind"
        assert body["result"]["nodes"]["draft"]["calls"] == 0  # restored, not called again

        again = c.post(f"/v1/reviews/{review_id}/reject", json={"reason": "late"})
        assert again.status_code == 409 and "already edited" in again.json()["error"]["message"]
