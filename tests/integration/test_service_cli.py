"""``fanout serve``: bad flags are one ``error:`` line and exit 2; a real server answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from fanout.cli import app

PIPELINE = "examples/pipelines/map_reduce.py:dag"
TOKEN = "cli-" + "9f8e7d6c" * 4


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("FANOUT_SERVICE_TOKENS", raising=False)
    return CliRunner()


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_serve_without_tokens_says_how_to_give_them(runner: CliRunner) -> None:
    result = runner.invoke(app, ["serve", PIPELINE])
    assert result.exit_code == 2
    (line,) = error_lines(result.output)
    assert "FANOUT_SERVICE_TOKENS" in line and "--tokens-file" in line


def test_serve_rejects_a_short_token_without_showing_it(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANOUT_SERVICE_TOKENS", "acme:short-secret")
    result = runner.invoke(app, ["serve", PIPELINE])
    assert result.exit_code == 2
    assert "short-secret" not in result.output
    assert "shorter than 16 characters" in error_lines(result.output)[0]


def test_serve_rejects_a_missing_pipeline_and_contradicting_flags(
    runner: CliRunner, tmp_path: Path
) -> None:
    missing = runner.invoke(app, ["serve", "nope/none.py:dag", "--no-auth"])
    assert missing.exit_code == 2 and len(error_lines(missing.output)) == 1
    tokens = tmp_path / "tokens"
    tokens.write_text(f"acme:{TOKEN}\n")
    both = runner.invoke(app, ["serve", PIPELINE, "--tokens-file", str(tokens), "--no-auth"])
    assert both.exit_code == 2 and "contradict" in error_lines(both.output)[0]
    twice = runner.invoke(app, ["serve", PIPELINE, PIPELINE, "--no-auth"])
    assert twice.exit_code == 2 and "two pipelines are named" in error_lines(twice.output)[0]
    assert runner.invoke(app, ["serve", PIPELINE, "--port", "70000"]).exit_code == 2


def test_fanout_serve_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# who may call\nacme:{TOKEN}\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "FANOUT_SERVICE_TOKENS"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fanout",
            "serve",
            PIPELINE,
            "--port",
            str(port),
            "--tokens-file",
            str(tokens),
            "--traces",
            str(tmp_path / "traces"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz").raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, "did not start"
                time.sleep(0.1)
        reply = httpx.post(
            f"{url}/v1/pipelines/map_reduce/runs",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"inputs": {"text": "Good. Bad."}},
            timeout=30,
        )
        assert reply.status_code == 200 and reply.json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM: the conventional exit status
    assert proc.returncode == -signal.SIGTERM, err
    assert "Traceback" not in err and TOKEN not in out + err
    # the app's lifespan closed the engine: its trace was rolled into Parquet
    parts = list((tmp_path / "traces").rglob("*.parquet"))
    assert parts, err
