"""Helpers shared by the test suites (on the path via pytest's ``pythonpath``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from fanout import parse_config
from fanout.config import Config
from fanout.sim.server import EmulatorConfig, EmulatorServer


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

    def reset(self) -> None:
        httpx.post(f"{self.root}/stats/reset").raise_for_status()
        self.faults(error_rate=0, truncate_rate=0, hang_rate=0, malformed_rate=0)

    def faults(self, **rates: float) -> None:
        httpx.post(f"{self.root}/admin/faults", json=rates).raise_for_status()


@contextmanager
def start_emulator(config: EmulatorConfig) -> Iterator[Emulator]:
    with EmulatorServer(config) as server:
        yield Emulator(server)
