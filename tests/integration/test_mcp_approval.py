"""A tool that needs approval, as a user meets it: a batch job over the CLI pauses the
records whose agent calls it, `fanout review approve/edit/reject` decides them, and
running the job again resumes each from the paused turn (no model call repeated)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
from support_mcp import SERVER, effects

from fanout.batch._writer import result_parts
from fanout.config import load_config

PIPELINE = textwrap.dedent(
    """
    from fanout import DAG, mcp

    dag = DAG("cleanup")
    dag.input("task")
    tools = [mcp("kv", include=["lookup", "delete"], approval=["delete"])]
    dag.output(answer=dag.llm("fast", "{task}", tools=tools, name="agent"))
    """
)


def fanout(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanout", *args], capture_output=True, text=True, timeout=180
    )


def last_rows(out: Path) -> dict[str, dict[str, object]]:
    rows: dict[str, dict[str, object]] = {}
    for part in result_parts(out):
        for row in pq.read_table(part).to_pylist():
            rows[str(row["key"])] = row
    return rows


def task(key: str) -> str:
    return f'[sim:tools=lookup({{"key": "{key}"}});delete({{"key": "{key}"}})] Clean up {key}.'


def test_approval_pauses_records_and_the_cli_resumes_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "fanout.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [providers.sim]
            kind = "sim"
            latency_ms = 1
            [models.fast]
            provider = "sim"
            model = "sim-small"
            [mcp.kv]
            command = "{sys.executable}"
            args = ["{SERVER}", "stdio"]
            env = {{ MCP_STATE = "{state}" }}
            """
        )
    )
    load_config(config)  # the file a user writes is valid
    pipeline = tmp_path / "cleanup.py"
    pipeline.write_text(PIPELINE)
    records = tmp_path / "in.jsonl"
    records.write_text("".join(json.dumps({"id": k, "task": task(k)}) + "\n" for k in "abcd"))
    out = tmp_path / "out"
    job = ("run", f"{pipeline}:dag", "--input", str(records), "--output", str(out),
           "--config", str(config), "--key", "id")  # fmt: skip

    first = fanout(*job)
    assert first.returncode == 0, first.stderr
    rows = last_rows(out)
    assert {r["status"] for r in rows.values()} == {"waiting_for_review"}
    # The lookups ran; no delete did: each waits for a person.
    assert sorted(effects(state)) == [f"lookup {k}" for k in "abcd"]

    listed = fanout("review", "list", "--data-dir", str(out), "--status", "pending")
    assert listed.returncode == 0, listed.stderr
    pending = [json.loads(line) for line in listed.stdout.splitlines()]
    by_key = {str(r["value"]["arguments"]["key"]): r for r in pending}
    assert sorted(by_key) == list("abcd")
    assert by_key["a"]["value"] == {"tool": "delete", "server": "kv", "arguments": {"key": "a"}}
    assert by_key["a"]["node"] == "agent:delete@1.1"

    ids = {k: str(r["review_id"]) for k, r in by_key.items()}
    decide = [
        ("review", "approve", ids["a"], "--by", "ann"),
        ("review", "edit", ids["b"], "--value", '{"key": "b-archive"}'),
        ("review", "reject", ids["c"], "--reason", "keep c"),
    ]
    for args in decide:
        done = fanout(*args, "--data-dir", str(out))
        assert done.returncode == 0, done.stderr

    second = fanout(*job)
    assert second.returncode == 0, second.stderr
    rows = last_rows(out)
    assert {k: rows[k]["status"] for k in "abcd"} == {
        "a": "ok", "b": "ok", "c": "ok", "d": "waiting_for_review",
    }  # fmt: skip
    assert "deleted a" in str(rows["a"]["output_answer"])
    assert "deleted b-archive" in str(rows["b"]["output_answer"])
    assert "a person rejected this call of delete: keep c" in str(rows["c"]["output_answer"])
    # One model turn per resumed record (the answer): the paused turn was not asked again.
    assert all(rows[k]["attempts"] == 1 for k in "abc"), [rows[k]["attempts"] for k in "abc"]
    assert sorted(effects(state)) == sorted(
        [f"lookup {k}" for k in "abcd"] + ["delete a", "delete b-archive"]
    )
