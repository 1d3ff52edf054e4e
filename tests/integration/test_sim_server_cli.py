"""``fanout sim-server`` as a user runs it: a separate process answering on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from support import free_port


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "sim-server", "--port", str(port), "--rpm", "60"],
        stderr=subprocess.PIPE,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{root}/stats").raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield root
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


def test_sim_server_answers_like_a_rate_limited_provider(server: str) -> None:
    body = {
        "model": "sim-small",
        "messages": [{"role": "user", "content": "Rate the sentiment of: I love it"}],
        "max_tokens": 5,
    }
    first = httpx.post(f"{server}/v1/chat/completions", json=body)
    second = httpx.post(f"{server}/v1/chat/completions", json=body)
    assert first.status_code == 200
    assert first.json()["choices"][0]["message"]["content"] == "positive"
    assert first.json()["usage"]["completion_tokens"] > 0
    assert first.headers["x-ratelimit-limit-requests"] == "60"
    assert second.status_code == 429  # a 60/min bucket holds one request
    assert float(second.headers["retry-after-ms"]) > 0
    models = httpx.get(f"{server}/v1/models").json()
    assert {m["id"] for m in models["data"]} == {"sim-small", "sim-large"}
    stats = httpx.get(f"{server}/stats").json()
    assert (stats["accepted"], stats["limited"]) == (1, 1)


def test_sim_server_rejects_bad_options_with_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fanout", "sim-server", "--error-rate", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "--error-rate must be between 0 and 1" in proc.stderr
    assert "Traceback" not in proc.stderr
