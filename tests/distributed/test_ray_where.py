"""Ray says where it runs: ``--ray local`` never joins ``RAY_ADDRESS``, ``--ray auto`` that
finds a cluster it cannot join is an error naming the fix, and a worker's config error
reaches the user as one ``error:`` line (exit 2)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import write_records
from typer.testing import CliRunner

from fanout import ConfigError, parse_config
from fanout.cli import app
from fanout.distributed import RayEngine

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = f"{ROOT / 'examples' / 'pipelines' / 'classify.py'}:dag"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there any more


def fanout(tmp_path: Path, *args: str, ray_address: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_ADDRESS": ray_address, "RAY_AUTH_MODE": "disabled"}
    records = write_records(tmp_path / "in.jsonl", 20)
    return subprocess.run(
        [sys.executable, "-m", "fanout", "run", CLASSIFY, "-i", str(records), "-o",
         str(tmp_path / "out"), "--workers", "1", "--no-traces", *args],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
    )  # fmt: skip


def test_ray_auto_that_finds_a_cluster_it_cannot_join_is_exit_2(tmp_path: Path) -> None:
    address = f"127.0.0.1:{closed_port()}"
    done = fanout(tmp_path, "--ray", "auto", ray_address=address)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: --ray auto found the Ray cluster at {address} (RAY_ADDRESS)")
    assert "nothing answers there" in line and "--ray local" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("ray_cluster")
def test_ray_local_never_joins_the_cluster_ray_address_names(tmp_path: Path) -> None:
    done = fanout(tmp_path, "--ray", "local", ray_address=f"127.0.0.1:{closed_port()}")
    assert done.returncode == 0, done.stderr
    assert "a local Ray instance, 1 workers" in done.stdout  # the summary says where


def keyed_config(base_url: str) -> Any:
    return parse_config(
        {
            "providers": {
                "emu": {"kind": "openai", "base_url": base_url, "api_key_env": "ONLY_ON_DRIVER"}
            },
            "models": {"fast": {"provider": "emu", "model": "sim-small"}},
        }
    )


async def test_a_config_error_on_the_workers_is_a_config_error_not_a_dead_actor(
    ray_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # set here, after the cluster's nodes started: the workers' environment lacks it
    monkeypatch.setenv("ONLY_ON_DRIVER", "sk-driver-only-000000")
    engine = RayEngine(keyed_config("http://127.0.0.1:9/v1"), workers=1, address="auto")
    with pytest.raises(ConfigError) as info:
        await engine.start()
    message = str(info.value)
    assert "a Ray worker" in message and "ONLY_ON_DRIVER" in message
    assert "runtime_env" in message and "sk-driver-only" not in message
    await engine.aclose()


def test_the_cli_says_it_as_one_error_line(
    ray_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONLY_ON_DRIVER", "sk-driver-only-000000")
    config = tmp_path / "keyed.toml"
    config.write_text(
        '[providers.emu]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'api_key_env = "ONLY_ON_DRIVER"\n[models.fast]\nprovider = "emu"\nmodel = "m"\n',
        encoding="utf-8",
    )
    records = write_records(tmp_path / "in.jsonl", 5)
    result = CliRunner().invoke(app, ["run", CLASSIFY, "-i", str(records), "-o",
                                      str(tmp_path / "out"), "--config", str(config), "--ray",
                                      ray_cluster.address, "--workers", "1"])  # fmt: skip
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ONLY_ON_DRIVER" in errors[0]
    assert "Traceback" not in result.output and "ActorDiedError" not in result.output
