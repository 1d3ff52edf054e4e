"""The ``fanout`` command: demo, run, validate, and one clear message (exit 2) for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fanout.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CLASSIFY = f"{EXAMPLES / 'pipelines' / 'classify.py'}:dag"
REVIEWS = EXAMPLES / "data" / "reviews.jsonl"
FAST_CONFIG = """
[providers.sim]
kind = "sim"
latency_ms = 0

[models.fast]
provider = "sim"
model = "sim-small"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0

[models.smart]
provider = "sim"
model = "sim-large"
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def fast_config(tmp_path: Path) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text(FAST_CONFIG, encoding="utf-8")
    return path


def test_demo_runs_offline_and_prints_summary_and_examples(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["demo", "--output", str(tmp_path / "demo")])

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "fanout run: triage" in out
    assert "│ records       │ 40" in out
    assert "│ ok            │ 39" in out
    assert "│ error         │ 1" in out
    assert "example rows" in out
    assert "urgent" in out
    assert "normal" in out
    assert "Summary:" in out
    assert "missing input 'text'" in out  # the deliberately broken sample record
    rows = pq.read_table(tmp_path / "demo" / "results").to_pylist()
    assert len(rows) == 40
    labels = {r["output_label"] for r in rows if r["status"] == "ok"}
    assert labels == {"urgent", "normal"}
    urgent = next(r for r in rows if r["output_label"] == "urgent")
    assert "negative" in urgent["output_scores"]  # a map of llm calls: a typed list
    assert json.loads(str(urgent["output_reply"])) != "no action"


def test_demo_repeats_the_sample_to_the_requested_count(runner: CliRunner, tmp_path: Path) -> None:
    args = ["demo", "--records", "90", "--latency-ms", "0", "--output", str(tmp_path)]
    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    keys = pq.read_table(tmp_path / "results", columns=["key"]).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 90
    assert "r001~3" in keys


def test_run_the_classify_example_from_the_repo_root(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_config: Path
) -> None:
    monkeypatch.chdir(ROOT)
    result = runner.invoke(
        app,
        [
            "run",
            "examples/pipelines/classify.py:dag",
            "--input",
            "examples/data/reviews.jsonl",
            "--output",
            str(tmp_path / "out"),
            "--config",
            str(fast_config),
            "--max-in-flight",
            "4",
            "--key",
            "id",
        ],
    )

    assert result.exit_code == 0, result.output
    assert "fanout run: classify" in result.stdout
    assert "│ records       │ 20" in result.stdout
    rows = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert len(rows) == 20
    labels = {r["key"]: r["output_label"] for r in rows}
    assert labels["rev-01"] == "positive"
    assert labels["rev-02"] == "negative"
    assert set(labels.values()) <= {"positive", "negative", "neutral"}
    # the trace is on by default, in OUTPUT/traces, and joins the results by trace_id
    traces = tmp_path / "out" / "traces"
    parts = list(traces.glob("date=*/job=*/part-*.parquet"))
    assert len(parts) == 1 and not list((traces / "_wal").glob("*.arrows"))
    spans = pq.read_table(parts[0]).to_pylist()
    runs = {s["trace_id"]: s for s in spans if s["record_type"] == "run"}
    assert set(runs) == {r["trace_id"] for r in rows}
    assert {runs[r["trace_id"]]["record_key"] for r in rows} == set(labels)


def test_run_the_agent_example_offline_on_the_default_config(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "run",
            "examples/pipelines/agent.py:dag",
            "-i",
            "examples/data/questions.jsonl",
            "-o",
            str(out),
            "--key",
            "id",
        ],
    )

    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "results").to_pylist()
    assert sorted(r["key"] for r in rows) == ["q-01", "q-02", "q-03", "q-04"]
    assert all(r["status"] == "ok" and r["attempts"] == 2 for r in rows)  # tool turn, answer
    assert all(r["output_answer"].startswith("Based on ") for r in rows)  # text: typed column
    spans = pq.read_table(next((out / "traces").glob("date=*/job=*/part-*.parquet")))
    tools = [s for s in spans.to_pylist() if str(s["span_name"]).startswith("execute_tool ")]
    assert len(tools) == 4 and {s["status"] for s in tools} == {"ok"}


def test_traces_go_where_asked_or_nowhere(
    runner: CliRunner, tmp_path: Path, fast_config: Path
) -> None:
    common = [f"{CLASSIFY}", "--input", str(REVIEWS), "--config", str(fast_config)]
    elsewhere = runner.invoke(
        app, ["run", *common, "-o", str(tmp_path / "a"), "--traces", str(tmp_path / "t")]
    )
    assert elsewhere.exit_code == 0, elsewhere.output
    assert list((tmp_path / "t").glob("date=*/job=*/part-*.parquet"))
    assert not (tmp_path / "a" / "traces").exists()

    off = runner.invoke(app, ["run", *common, "-o", str(tmp_path / "b"), "--no-traces"])
    assert off.exit_code == 0, off.output
    assert not (tmp_path / "b" / "traces").exists()
    assert list((tmp_path / "b" / "results").glob("part-*.parquet"))

    both = runner.invoke(
        app, ["run", *common, "-o", str(tmp_path / "c"), "--traces", "x", "--no-traces"]
    )
    assert both.exit_code == 2
    assert "--traces and --no-traces" in both.stderr

    local = runner.invoke(app, ["run", *common, "-o", str(tmp_path / "d"), "--read-on-driver"])
    assert local.exit_code == 2
    assert "--read-on-driver applies to a job on Ray" in local.stderr


@pytest.mark.parametrize("pipeline", ["map_reduce", "tools"])
def test_the_other_examples_run(
    runner: CliRunner, tmp_path: Path, fast_config: Path, pipeline: str
) -> None:
    spec = f"{EXAMPLES / 'pipelines' / pipeline}.py:dag"
    args = ["run", spec, "-i", str(REVIEWS), "-o", str(tmp_path), "-c", str(fast_config)]
    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "results").to_pylist()
    assert len(rows) == 20
    assert [r["status"] for r in rows] == ["ok"] * 20, rows[:2]


def test_run_logs_progress_lines_when_not_on_a_terminal(
    runner: CliRunner, tmp_path: Path, fast_config: Path
) -> None:
    args = ["run", CLASSIFY, "-i", str(REVIEWS), "-o", str(tmp_path), "-c", str(fast_config)]
    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    # A line for the first snapshot, then one every 5 s, and the last: done/total, counts.
    lines = result.stderr.splitlines()
    assert lines[0].startswith("progress: ")
    assert lines[-1].startswith("progress: 20/20 records · ok 20 · errors 0 · ")
    assert "\x1b[" not in result.output  # no terminal escapes in logs


def test_validate_lists_nodes_inputs_outputs_and_models(runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", "fanout._demo.pipeline:dag"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "DAG 'triage' is valid against the embedded default." in out
    assert "inputs: text" in out
    assert "outputs: summary, label, reply, scores" in out
    for node in ("split_sentences", "scores", "apology", "reply", "summary"):
        assert f"│ {node} " in out
    assert "urgent → apology" in out
    assert "│ fast  │ sim      │ sim-small │ smart" in out


BOOM = "import fanout\nraise RuntimeError('boom at import')\n"
NOT_A_DAG = "from fanout import DAG\nx = 42\ndag = DAG('d')\n"
BAD_CONFIG = '[providers.sim]\nkind = "sim"\nlatencyms = 3\n'
BAD_TYPE = '[providers.sim]\nkind = "sim"\nlatency_ms = "slow"\n'
HUGE = (
    "from fanout import DAG\ndag = DAG('huge')\n"
    "dag.output(x=dag.llm('huge', 'hi {text}', text=dag.input('text')))\n"
)


@pytest.mark.parametrize(
    ("case", "argv", "expected"),
    [
        ("no file", ["validate", "{tmp}/nope.py:dag"], "file '{tmp}/nope.py' does not exist"),
        ("no colon", ["validate", "{tmp}/mod.py"], "expected the form 'path/to/file.py:attr'"),
        (
            "no attribute",
            ["validate", "{tmp}/mod.py:dagg"],
            "has no attribute 'dagg'; DAGs defined in {tmp}/mod.py: dag",
        ),
        ("not a DAG", ["validate", "{tmp}/mod.py:x"], "'x' is not a fanout DAG (its type is int)"),
        ("no module", ["validate", "no_such_mod_xyz:dag"], "no module named 'no_such_mod_xyz'"),
        (
            "import fails",
            ["validate", "{tmp}/boom.py:dag"],
            "raised RuntimeError at {tmp}/boom.py:2: boom at import",
        ),
        (
            "config unknown key",
            ["validate", "{tmp}/mod.py:dag", "--config", "{tmp}/bad.toml"],
            "providers.sim.latencyms: unknown key",
        ),
        (
            "config wrong type",
            ["validate", "{tmp}/mod.py:dag", "--config", "{tmp}/type.toml"],
            "providers.sim.latency_ms: Input should be a valid number",
        ),
        (
            "config missing",
            ["validate", "{tmp}/mod.py:dag", "--config", "{tmp}/none.toml"],
            "config file '{tmp}/none.toml' does not exist",
        ),
        (
            "DAG invalid for config",
            ["run", "{tmp}/huge.py:dag", "-i", str(REVIEWS), "-o", "{tmp}/out"],
            "model alias 'huge' is not configured (known: fast, smart)",
        ),
        (
            "input missing",
            ["run", CLASSIFY, "-i", "{tmp}/none.jsonl", "-o", "{tmp}/out"],
            "input file '{tmp}/none.jsonl' does not exist",
        ),
        (
            "input extension",
            ["run", CLASSIFY, "-i", "{tmp}/bad.toml", "-o", "{tmp}/out"],
            "input file '{tmp}/bad.toml': unknown extension; supported: .jsonl",
        ),
        (
            "input not parquet",
            ["run", CLASSIFY, "-i", "{tmp}/fake.parquet", "-o", "{tmp}/out"],
            "input file '{tmp}/fake.parquet' is not a readable Parquet file",
        ),
        (
            "output is a file",
            ["run", CLASSIFY, "-i", str(REVIEWS), "-o", "{tmp}/mod.py"],
            "output '{tmp}/mod.py' exists and is not a directory",
        ),
    ],
)
def test_bad_input_gives_one_clear_message_and_exit_2(
    runner: CliRunner, tmp_path: Path, case: str, argv: list[str], expected: str
) -> None:
    (tmp_path / "mod.py").write_text(NOT_A_DAG, encoding="utf-8")
    (tmp_path / "boom.py").write_text(BOOM, encoding="utf-8")
    (tmp_path / "huge.py").write_text(HUGE, encoding="utf-8")
    (tmp_path / "bad.toml").write_text(BAD_CONFIG, encoding="utf-8")
    (tmp_path / "type.toml").write_text(BAD_TYPE, encoding="utf-8")
    (tmp_path / "fake.parquet").write_text("not parquet", encoding="utf-8")
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]

    result = runner.invoke(app, args)

    assert result.exit_code == 2, (case, result.output)
    assert result.stdout == "", case
    assert result.stderr.startswith("error: "), (case, result.stderr)
    assert result.stderr.count("error:") == 1, (case, result.stderr)
    assert expected.replace("{tmp}", str(tmp_path)) in result.stderr, (case, result.stderr)
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists(), "nothing is written for bad input"


def test_usage_errors_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["run", CLASSIFY, "--input", str(REVIEWS)])
    assert result.exit_code == 2
    assert "Missing option '--output'" in result.stderr

    result = runner.invoke(
        app, ["run", CLASSIFY, "-i", str(REVIEWS), "-o", "x", "--concurrency", "0"]
    )
    assert result.exit_code == 2
    assert "--concurrency" in result.stderr


def test_module_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    """``python -m fanout``: real process, real exit code, no traceback for bad input."""
    help_run = subprocess.run(
        [sys.executable, "-m", "fanout", "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_run.returncode == 0
    assert "Usage: fanout" in help_run.stdout
    for command in ("run", "demo", "validate"):
        assert f"  {command} " in help_run.stdout

    bad = subprocess.run(
        [sys.executable, "-m", "fanout", "validate", f"{tmp_path}/missing.py:dag"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr == f"error: pipeline '{tmp_path}/missing.py:dag': file " + (
        f"'{tmp_path}/missing.py' does not exist; check the path\n"
    )
    assert bad.stdout == ""


def test_the_triage_example_routes_hard_records_to_the_strong_model(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    args = ["run", "examples/pipelines/triage.py:dag", "-i", "examples/data/tickets.jsonl"]
    args += ["-o", str(out), "-c", "examples/fanout.toml", "--key", "id"]
    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "results").to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 12
    levels = {r["key"]: r["output_level"] for r in rows}
    # the sim's triage rule: over 25 words, or more than one question, is hard
    assert sorted(k for k, v in levels.items() if v == "hard") == ["t-03", "t-05", "t-08", "t-10"]
    spans = pq.read_table(next((out / "traces").glob("date=*/job=*/part-*.parquet")))
    chats = [s for s in spans.to_pylist() if str(s["span_name"]).startswith("chat")]
    answered = {(s["record_key"], s["node_id"], s["request_model"]) for s in chats}
    for key, level in levels.items():
        assert (key, "level", "sim-small") in answered
        expected = ("hard_answer", "sim-large") if level == "hard" else ("easy_answer", "sim-small")
        assert (key, *expected) in answered
        other = "easy_answer" if level == "hard" else "hard_answer"
        assert not [a for a in answered if a[0] == key and a[1] == other]
