"""What the integration tests share: the emulator-backed config and trace rows read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fanout import parse_config
from fanout.config import Config
from fanout.trace import trace_files

RPM = 1200  # the emulator's limit, and what fanout's limiter is told


def emulator_config(base_url: str) -> Config:
    """``fast`` (sim-small) on the emulator at ``base_url``, limited to ``RPM``."""
    return parse_config(
        {
            "providers": {
                "emu": {
                    "kind": "openai",
                    "base_url": base_url,
                    "requests_per_min": RPM,
                    "retry": {"max_attempts": 3, "initial_backoff_s": 0.01},
                }
            },
            "models": {
                "fast": {
                    "provider": "emu",
                    "model": "sim-small",
                    "input_usd_per_mtok": 1.0,
                    "output_usd_per_mtok": 2.0,
                }
            },
        }
    )


def call_rows(traces: Path) -> list[dict[str, Any]]:
    """The trace's provider-call attempt rows (Parquet read back)."""
    files = trace_files(traces)
    table = pa.concat_tables([pq.read_table(p) for p in files.parts])
    return [
        r
        for r in table.to_pylist()
        if r["record_type"] == "attempt" and str(r["span_name"]).startswith("chat ")
    ]
