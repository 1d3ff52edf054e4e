"""Helpers shared by the test suites (on the path via pytest's ``pythonpath``)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from fanout import parse_config
from fanout.config import Config
from fanout.sim.server import EmulatorConfig, EmulatorServer
from fanout.trace import Span


class ListSink:
    """A trace sink that keeps every span it is given (``Engine(traces=ListSink())``)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    def emit(self, span: Span) -> None:
        self.spans.append(span)


def write_records(path: Path, count: int, text: str = "review {i}") -> Path:
    """``count`` JSON Lines records ``{"id": "r<i>", "text": text.format(i=i)}`` in ``path``."""
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": text.format(i=i)}) + "\n" for i in range(count)),
        encoding="utf-8",
    )
    return path


def sim_config(latency_ms: float = 0.0, *, jitter: float = 0.0, **sim: object) -> Config:
    """fast/smart on one sim provider; smart is the fallback of fast."""
    return parse_config(
        {
            "providers": {
                "sim": {"kind": "sim", "latency_ms": latency_ms, "jitter_sigma": jitter, **sim}
            },
            "models": {
                "fast": {
                    "provider": "sim",
                    "model": "sim-small",
                    "fallbacks": ["smart"],
                    "input_usd_per_mtok": 1.0,
                    "output_usd_per_mtok": 2.0,
                },
                "smart": {
                    "provider": "sim",
                    "model": "sim-large",
                    "input_usd_per_mtok": 10.0,
                    "output_usd_per_mtok": 20.0,
                },
            },
        }
    )


class Emulator:
    """A running emulator with helpers to read its counts and change its faults."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.base_url = server.base_url
        self.root = self.base_url.removesuffix("/v1")

    def stats(self) -> dict[str, int]:
        data: dict[str, int] = httpx.get(f"{self.root}/stats").json()
        return data

    def batch_stats(self, api: str = "openai") -> dict[str, Any]:
        """A Batch API's counters (``api``: ``openai``, ``/v1/batches``; ``anthropic``,
        ``/v1/messages/batches``): batches by status, lines, billed usage."""
        path = "/stats/messages/batches" if api == "anthropic" else "/stats/batches"
        data: dict[str, Any] = httpx.get(f"{self.root}{path}").json()
        return data

    def prompts(self) -> dict[str, int]:
        """Calls answered per prompt (an emulator started with ``--record-prompts``)."""
        data: dict[str, int] = httpx.get(f"{self.root}/stats/prompts").json()
        return data

    def reset(self) -> None:
        httpx.post(f"{self.root}/stats/reset").raise_for_status()
        self.faults(error_rate=0, truncate_rate=0, hang_rate=0, malformed_rate=0)

    def faults(self, **rates: float) -> None:
        httpx.post(f"{self.root}/admin/faults", json=rates).raise_for_status()


@contextmanager
def start_emulator(config: EmulatorConfig) -> Iterator[Emulator]:
    with EmulatorServer(config) as server:
        yield Emulator(server)


def free_port() -> int:
    """A loopback port nothing listens on (at the moment of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def emulator_process(*args: str) -> Iterator[Emulator]:
    """``fanout sim-server ARGS`` in its own process (as a real provider is: not sharing
    the test's CPU and GIL), on a free loopback port."""
    import subprocess
    import sys
    import time

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "sim-server", "--port", str(port), *args],
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{root}/stats").raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("fanout sim-server did not start") from None
                time.sleep(0.05)
        yield Emulator(_Remote(f"{root}/v1"))  # type: ignore[arg-type]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class _Remote:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url


def batch_config(
    base_url: str, *, max_attempts: int = 3, kind: str = "openai", **batch: object
) -> Config:
    """``fast`` (sim-small) on the emulator at ``base_url`` in batch mode, polled briskly;
    ``batch`` sets ``[models.fast.batch]`` keys (``enabled`` defaults to true). ``kind``
    ``anthropic``: its Messages and Message Batches APIs, the key in ``FANOUT_TEST_KEY``."""
    wire: dict[str, object] = {"kind": kind, "base_url": base_url}
    if kind == "anthropic":
        wire["api_key_env"] = "FANOUT_TEST_KEY"
    return parse_config(
        {
            "providers": {
                "emu": {
                    **wire,
                    "retry": {"max_attempts": max_attempts, "initial_backoff_s": 0.01},
                    "batch": {"poll_initial_s": 0.05, "poll_max_s": 0.2, "flush_idle_s": 0.1},
                }
            },
            "models": {
                "fast": {
                    "provider": "emu",
                    "model": "sim-small",
                    "input_usd_per_mtok": 1.0,
                    "output_usd_per_mtok": 2.0,
                    "batch": {"enabled": True, **batch},
                }
            },
        }
    )
