"""``fanout serve --ray local`` end to end: the command starts its own Ray (apart from the
session's cluster, which it never joins) with Serve's HAProxy ingress, the openai SDK
calls through it to the emulator, and SIGTERM stops Serve, HAProxy with it, and removes
HAProxy's files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from support import Emulator, emulator_process, free_port

from fanout.store import KeyStore

pytestmark = pytest.mark.slow  # a Ray of its own: ~15 s on 2 cores

_RAY_ENV = ("RAY_ADDRESS", "RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_HAPROXY_STATS_PORT")


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with emulator_process("--latency-ms", "0") as emu:
        yield emu


def _wait_up(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The banner, once the command printed it (it has deployed: Serve answers)."""
    deadline = time.monotonic() + 180
    while "fanout serve on Ray Serve at" not in (text := log.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"fanout serve --ray did not come up:\n{text}")
        time.sleep(0.2)
    return text


def _haproxy_configs(root: int | None) -> list[Path]:
    """The config files (``-f``) of the HAProxy processes started under process ``root``
    (``None``: of all the machine's)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # "pid (comm) state ppid ...": comm may hold spaces, never the last ")"
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    found = []
    for pid in parents:
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if root is not None and (ancestor != root or pid == root):
            continue
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"haproxy") and b"-f" in args:
            found.append(Path(args[args.index(b"-f") + 1].decode()))
    return sorted(set(found))


@pytest.mark.timeout(300)
def test_fanout_serve_on_ray_answers_the_openai_sdk_through_haproxy(
    emulator: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "fanout.toml").write_text(
        f'[providers.emu]\nkind = "openai"\nbase_url = "{emulator.base_url}"\n'
        'requests_per_min = 600\n[models.fast]\nprovider = "emu"\nmodel = "sim-small"\n'
    )
    _, key = KeyStore(tmp_path / "keys.db").create("acme")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in _RAY_ENV}  # nothing to join
    env["RAY_AUTH_MODE"] = "disabled"  # loopback only: no token banner
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "serve", "--ray", "local", "--replicas", "1",
             "--config", str(tmp_path / "fanout.toml"), "--keys-db", str(tmp_path / "keys.db"),
             "--port", str(port)],
            env=env, stderr=err, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        banner = _wait_up(proc, log)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "hello"}], max_tokens=8
        )
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.total_tokens > 0
        assert emulator.stats()["accepted"] >= 1  # answered upstream, not by a fake
        stats = re.search(r"HAProxy; its stats on port (\d+)", banner)
        assert stats is not None, banner
        assert int(stats.group(1)) != 8404  # a port of its own, not Ray's fixed default
        page = httpx.get(f"http://127.0.0.1:{stats.group(1)}/stats", timeout=10)
        assert page.status_code == 200 and "http_frontend" in page.text
        (config_file,) = _haproxy_configs(proc.pid)
        files = config_file.parent.parent  # DIR/NODE_ID/haproxy.cfg
        assert files.name.startswith("fanout-hap-")  # its own, not /tmp/haproxy-serve
    finally:
        proc.send_signal(signal.SIGTERM)  # as Ctrl-C: serve.shutdown(), then the files go
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert proc.returncode == 0, log.read_text()
    assert not files.exists()
    assert config_file not in _haproxy_configs(None)  # not left listening on the port
