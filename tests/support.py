"""Helpers shared by the test suites (on the path via pytest's ``pythonpath``)."""

from __future__ import annotations

from fanout import parse_config
from fanout.config import Config


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
