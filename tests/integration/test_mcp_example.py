"""The MCP example (examples/mcp/, examples/pipelines/mcp_agent.py) runs as its docs say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from fanout.batch._writer import result_parts
from fanout.config import load_config

ROOT = Path(__file__).parents[2]


def test_the_example_job_answers_and_waits_for_the_delete(tmp_path: Path) -> None:
    text = (ROOT / "examples/mcp/fanout.toml").read_text()
    config = tmp_path / "fanout.toml"
    config.write_text(text.replace('"out/mcp-data"', f'"{tmp_path / "data"}"'))
    load_config(config)
    # `command = "python"`: this environment's python, the one with fanout[mcp]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "fanout", "run", "examples/pipelines/mcp_agent.py:dag",
         "--config", str(config), "-i", "examples/data/notes_tasks.jsonl", "-o", str(out),
         "--key", "id"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["key"]: r for part in result_parts(out) for r in pq.read_table(part).to_pylist()}
    assert {k: r["status"] for k, r in rows.items()} == {
        "q1": "ok", "q2": "ok", "q3": "ok", "q4": "waiting_for_review",
    }  # fmt: skip
    assert "Green tea steeps at 80C" in str(rows["q1"]["output_answer"])
    assert "noted rice" in str(rows["q3"]["output_answer"])


def test_a_job_whose_server_does_not_start_stops_before_any_record(tmp_path: Path) -> None:
    config = tmp_path / "fanout.toml"
    config.write_text(
        (ROOT / "examples/mcp/fanout.toml")
        .read_text()
        .replace('"out/mcp-data"', f'"{tmp_path / "data"}"')
        .replace('command = "python"', f'command = "{tmp_path / "no-such-python"}"')
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "fanout", "run", "examples/pipelines/mcp_agent.py:dag",
         "--config", str(config), "-i", "examples/data/notes_tasks.jsonl", "-o", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: MCP server 'notes' could not be started"), lines
    assert "no-such-python" in lines[-1]
    assert not list(result_parts(out))  # no record ran
