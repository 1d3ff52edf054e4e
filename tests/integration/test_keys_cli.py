"""``fanout keys create/list/revoke``, and ``fanout serve --keys-db`` answering the openai
SDK until the key is revoked (a real server process, the emulator upstream)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
from support import emulator_process
from typer.testing import CliRunner

from fanout.cli import app


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_create_shows_the_key_once_list_never(tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(tmp_path / "keys.db")
    made = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--keys-db", db,
                               "--budget-usd", "5", "--period", "day", "--share", "0.25",
                               "--priority", "batch", "--name", "etl"])  # fmt: skip
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout.splitlines()[0])
    plain = created["api_key"]
    assert plain.startswith("sk-fo-") and len(plain) > 40
    assert created["tenant"] == "acme" and created["share"] == 0.25
    listed = runner.invoke(app, ["keys", "list", "--keys-db", db])
    assert listed.exit_code == 0
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["key_id"] == created["key_id"] and row["priority"] == "batch"
    assert row["spent_usd"] == 0 and row["requests"] == 0
    assert plain not in listed.output and "api_key" not in row
    for path in tmp_path.iterdir():
        assert plain.encode() not in path.read_bytes(), path
    gone = runner.invoke(app, ["keys", "revoke", created["key_id"], "--keys-db", db])
    assert gone.exit_code == 0 and json.loads(gone.stdout)["revoked_at"] is not None
    assert runner.invoke(app, ["keys", "list", "--keys-db", db]).stdout == ""
    both = runner.invoke(app, ["keys", "list", "--keys-db", db, "--revoked"])
    assert json.loads(both.stdout)["key_id"] == created["key_id"]


def test_bad_usage_exits_2_with_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(tmp_path / "keys.db")
    for args, words in (
        (["create", "--tenant", "a", "--period", "week"], "--period"),
        (["create", "--tenant", "a", "--share", "2"], "share"),
        (["create", "--tenant", "a", "--priority", "urgent"], "--priority"),
        (["revoke", "key_nope"], "no key"),
    ):
        if args[0] == "revoke":
            runner.invoke(app, ["keys", "create", "--tenant", "a", "--keys-db", db])
        result = runner.invoke(app, ["keys", *args, "--keys-db", db])
        assert result.exit_code == 2, (args, result.output)
        (line,) = error_lines(result.output)
        assert words in line
    missing = runner.invoke(app, ["keys", "list", "--keys-db", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no key store" in error_lines(missing.output)[0]


def test_serve_with_keys_until_revoked(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--keys-db", str(db)])
    created = json.loads(made.stdout.splitlines()[0])
    with emulator_process() as emu:
        config = tmp_path / "fanout.toml"
        config.write_text(
            f'[providers.emu]\nkind = "openai"\nbase_url = "{emu.base_url}"\n'
            '[models.fast]\nprovider = "emu"\nmodel = "sim-small"\n'
        )
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "FANOUT_SERVICE_TOKENS"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "serve", "--config", str(config),
             "--keys-db", str(db), "--port", str(port)],
            env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _wait_up(f"http://127.0.0.1:{port}/healthz", proc)
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key=created["api_key"], max_retries=0
            )
            reply = client.chat.completions.create(
                model="fast", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.usage is not None and reply.usage.total_tokens > 0
            runner.invoke(app, ["keys", "revoke", created["key_id"], "--keys-db", str(db)])
            refused = None
            deadline = time.monotonic() + 20  # the server's key cache lasts 1 s
            while refused is None and time.monotonic() < deadline:
                try:
                    client.models.list()
                except openai.AuthenticationError as exc:
                    refused = exc
                time.sleep(0.05)
            assert refused is not None and refused.status_code == 401
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=20)
    assert created["api_key"] not in stderr


def _wait_up(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("fanout serve did not start") from None
            time.sleep(0.05)
