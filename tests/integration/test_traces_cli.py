"""``fanout traces``: summary, show and export of a synthetic traces directory; bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support_traces import T0, TRACE_1, TRACE_2, attempt, sample_traces, sid, table
from typer.testing import CliRunner

from fanout.cli import app
from fanout.trace._files import part_path
from fanout.trace._otlp import export_otlp

WIDE = {"COLUMNS": "200"}  # tables and timeline lines unwrapped


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    return sample_traces(tmp_path / "traces")


# -- summary -------------------------------------------------------------------------------


def test_summary_prints_tables_per_model_node_and_job(runner: CliRunner, traces: Path) -> None:
    result = runner.invoke(app, ["traces", "summary", str(traces)], env=WIDE)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"traces in {traces}: 14 spans (2 parts + 1 open log segment)" in out
    for title in ("per model", "per node", "errors by type", "per job"):
        assert title in out
    fast = next(line for line in out.splitlines() if "│ fast " in line)
    cells = [cell.strip() for cell in fast.split("│")[1:-1]]
    assert cells == [
        "fast",
        "sim/sim-small",
        "online",
        "5",
        "3",
        "2",
        "2",
        "300/480/496",  # the calls on the wire
        "5/84",  # an attempt's wait before it: limiter + back-off (15 + 85 for one)
        "40 (mean 10.0)",
        "150/15",
        "$0.0015",
    ]
    assert "│ node triage.classify │ RateLimited     │        2 │" in out
    job_b = next(line for line in out.splitlines() if "│ job-b " in line)
    assert [cell.strip() for cell in job_b.split("│")[1:5]] == ["job-b", "0", "", "1"]


def test_summary_json_has_the_same_figures(runner: CliRunner, traces: Path) -> None:
    result = runner.invoke(app, ["traces", "summary", str(traces), "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["directory"], data["spans"], data["parts"], data["segments"]) == (
        str(traces),
        14,
        2,
        1,
    )
    fast = data["models"][0]
    assert fast["model_alias"] == "fast"
    assert fast["stats"]["errors_by_type"] == {"RateLimited": 2, "ProviderTimeout": 1}
    assert fast["stats"]["p95_ms"] == pytest.approx(480.0)
    assert [n["node_id"] for n in data["nodes"]] == ["classify", "lookup", "summarize"]
    job_a = data["jobs"][0]
    assert job_a["first_start"] == T0.isoformat()
    assert job_a["wall_s"] == pytest.approx(3.5)
    assert job_a["runs_by_status"] == {"error": 1, "ok": 1}


# -- show ------------------------------------------------------------------------------------


def test_show_prints_an_indented_timeline_in_tree_order(runner: CliRunner, traces: Path) -> None:
    result = runner.invoke(app, ["traces", "show", str(traces), TRACE_1[:8]], env=WIDE)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"trace {TRACE_1} · job job-a · dag triage · record rec-1"
    assert lines[1].split() == ["start", "ms", "took", "ms", "span", "status", "model/tool",
                                "tokens", "in/out", "cost", "error"]  # fmt: skip
    start, end = lines[1].index("span"), lines[1].index("status")
    labels = [line[start:end].rstrip() for line in lines[2:]]
    assert labels == [
        "run triage",
        "  llm classify",
        "    chat sim-small #1",
        "    chat sim-small #2",
        "  tool lookup",
        "    tool lookup #1",
        "  llm summarize",
        "    chat sim-large #1",
    ]
    first_try = lines[4]
    assert first_try.split()[:2] == ["+10.0", "100.0"]
    assert "fast (sim/sim-small)" in first_try
    assert first_try.endswith("RateLimited (HTTP 429): slow down")
    retry = lines[5].split()
    assert retry[:2] == ["+200.0", "200.0"]
    assert "100/10" in retry and "$0.001000" in retry


# -- export ------------------------------------------------------------------------------------


def _strict(token: str) -> object:
    raise AssertionError(f"not JSON: {token}")


def _spans(lines: list[str]) -> list[dict[str, object]]:
    spans: list[dict[str, object]] = []
    for line in lines:
        request = json.loads(line, parse_constant=_strict)  # NaN / Infinity are not JSON
        (resource_spans,) = request["resourceSpans"]
        assert resource_spans["resource"]["attributes"] == [
            {"key": "service.name", "value": {"stringValue": "fanout"}}
        ]
        (scope_spans,) = resource_spans["scopeSpans"]
        assert scope_spans["scope"]["name"] == "fanout"
        assert scope_spans["scope"]["version"]
        spans.extend(scope_spans["spans"])
    return spans


def _attributes(span: dict[str, object]) -> dict[str, dict[str, object]]:
    attrs = span["attributes"]
    assert isinstance(attrs, list)
    keys = [a["key"] for a in attrs]
    assert len(keys) == len(set(keys)), keys
    return {a["key"]: a["value"] for a in attrs}


def test_export_writes_otlp_json_lines_with_genai_attributes(
    runner: CliRunner, traces: Path
) -> None:
    result = runner.invoke(app, ["traces", "export", str(traces), "--format", "otlp-json"])

    assert result.exit_code == 0, result.output
    spans = _spans(result.stdout.splitlines())
    assert len(spans) == 14
    by_id = {s["spanId"]: s for s in spans}
    assert len(by_id) == 14

    run = by_id[sid("r1")]
    assert "parentSpanId" not in run
    assert (run["traceId"], run["name"], run["kind"]) == (TRACE_1, "run triage", 1)
    assert run["status"] == {"code": 1}
    assert run["startTimeUnixNano"] == str(int(T0.timestamp()) * 10**9)
    assert run["endTimeUnixNano"] == str(int(T0.timestamp()) * 10**9 + 1000 * 10**6)
    assert _attributes(run)["openinference.span.kind"] == {"stringValue": "CHAIN"}

    llm = by_id[sid("a13")]
    assert (llm["parentSpanId"], llm["kind"]) == (sid("n1s"), 3)  # CLIENT
    attrs = _attributes(llm)
    assert attrs["gen_ai.operation.name"] == {"stringValue": "chat"}
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == {"stringValue": "sim"}
    assert attrs["gen_ai.request.model"] == {"stringValue": "sim-large"}
    assert attrs["gen_ai.response.model"] == {"stringValue": "sim-large-v2"}
    assert attrs["gen_ai.response.finish_reasons"] == {
        "arrayValue": {"values": [{"stringValue": "stop"}]}
    }
    assert attrs["gen_ai.usage.input_tokens"] == {"intValue": "200"}
    assert attrs["gen_ai.usage.output_tokens"] == {"intValue": "50"}
    assert attrs["openinference.span.kind"] == {"stringValue": "LLM"}
    assert attrs["llm.model_name"] == {"stringValue": "sim-large-v2"}
    assert attrs["llm.provider"] == {"stringValue": "sim"}
    assert attrs["llm.token_count.prompt"] == {"intValue": "200"}
    assert attrs["llm.token_count.completion"] == {"intValue": "50"}
    assert attrs["llm.token_count.total"] == {"intValue": "250"}
    assert attrs["input.value"] == {"stringValue": "hello"}
    assert attrs["output.value"] == {"stringValue": "a summary"}
    assert attrs["fanout.model_alias"] == {"stringValue": "smart"}
    assert attrs["fanout.cost_usd"] == {"doubleValue": 0.01}
    assert attrs["fanout.attempt"] == {"intValue": "1"}
    assert attrs["fanout.job_id"] == {"stringValue": "job-a"}
    assert attrs["fanout.provider"] == {"stringValue": "sim"}  # the config's name for it
    assert attrs["llm.cost.total"] == {"doubleValue": 0.01}
    assert "fanout.input_text" not in attrs

    failed = by_id[sid("a11")]
    assert failed["status"] == {"code": 2, "message": "slow down"}
    attrs = _attributes(failed)
    assert attrs["fanout.http_status"] == {"intValue": "429"}
    assert attrs["fanout.retryable"] == {"boolValue": True}
    assert attrs["fanout.error_type"] == attrs["error.type"] == {"stringValue": "RateLimited"}
    assert "gen_ai.response.model" not in attrs  # nulls are skipped, not sent empty
    assert "input.value" not in attrs

    tool = by_id[sid("a14")]
    assert tool["kind"] == 1  # INTERNAL
    attrs = _attributes(tool)
    assert attrs["gen_ai.operation.name"] == {"stringValue": "execute_tool"}
    assert attrs["gen_ai.tool.name"] == {"stringValue": "lookup"}
    assert attrs["openinference.span.kind"] == {"stringValue": "TOOL"}
    assert "fanout.tool_name" not in attrs and "gen_ai.provider.name" not in attrs

    asked_for_tool = by_id[sid("a31")]  # from the open log segment
    assert asked_for_tool["kind"] == 3
    assert _attributes(asked_for_tool)["fanout.tool_name"] == {"stringValue": "search"}

    kinds = [s["kind"] for s in spans]
    assert kinds.count(3) == 6  # the LLM attempts: a11 a12 a13 a21 a22 a31
    assert sum(1 for s in spans if s["traceId"] == TRACE_2) == 4


def test_export_to_a_file_reports_the_count_on_stderr(
    runner: CliRunner, traces: Path, tmp_path: Path
) -> None:
    out = tmp_path / "spans.jsonl"
    result = runner.invoke(
        app, ["traces", "export", str(traces), "-f", "otlp-json", "--output", str(out)]
    )

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == f"exported 14 spans to {out}\n"
    assert len(_spans(out.read_text(encoding="utf-8").splitlines())) == 14
    assert not list(tmp_path.glob("*.partial"))


def test_export_escapes_text_spells_non_finite_numbers_and_keeps_extra_columns(
    tmp_path: Path,
) -> None:
    message = 'bad "quote" \\ back\nline — ünïcode'
    odd = attempt(TRACE_1, "q1", "n", "classify", start_ms=0, duration_ms=10,
                  status="error", error_message=message, limiter_wait_ms=float("nan"),
                  backoff_ms=float("inf"), queue_wait_ms=float("-inf"), cost_usd=1e-7)  # fmt: skip
    newer = table([odd]).append_column("gpu_ms", pa.array([12.5]))  # a newer writer's column
    path = part_path(tmp_path, "2025-03-04", "job-a", "w1-000001")
    path.parent.mkdir(parents=True)
    pq.write_table(newer, path)
    buffer = io.StringIO()

    assert export_otlp(tmp_path, buffer) == 1

    (span,) = _spans(buffer.getvalue().splitlines())
    assert span["status"] == {"code": 2, "message": message}
    attrs = _attributes(span)
    assert attrs["fanout.limiter_wait_ms"] == {"doubleValue": "NaN"}
    assert attrs["fanout.backoff_ms"] == {"doubleValue": "Infinity"}
    assert attrs["fanout.queue_wait_ms"] == {"doubleValue": "-Infinity"}
    assert attrs["fanout.cost_usd"] == {"doubleValue": 1e-7}
    assert attrs["fanout.gpu_ms"] == {"doubleValue": 12.5}
    assert attrs["error.type"] == {"stringValue": "_OTHER"}  # failed, with no error type


def test_export_marks_an_agent_node_over_max_steps_as_failed(tmp_path: Path) -> None:
    row = attempt(TRACE_1, "q1", "agent", "agent", start_ms=0, duration_ms=10,
                  status="max_steps_exceeded", error_type="MaxStepsExceeded",
                  error_message="max_steps=2")  # fmt: skip
    path = part_path(tmp_path, "2025-03-04", "job-a", "w1-000001")
    path.parent.mkdir(parents=True)
    pq.write_table(table([row]), path)
    buffer = io.StringIO()

    assert export_otlp(tmp_path, buffer) == 1

    (span,) = _spans(buffer.getvalue().splitlines())
    assert span["status"] == {"code": 2, "message": "max_steps=2"}
    assert _attributes(span)["error.type"] == {"stringValue": "MaxStepsExceeded"}


def test_export_streams_requests_of_at_most_batch_spans(traces: Path) -> None:
    buffer = io.StringIO()

    count = export_otlp(traces, buffer, batch=3)

    lines = buffer.getvalue().splitlines()
    sizes = [len(_spans([line])) for line in lines]
    assert count == sum(sizes) == 14
    assert max(sizes) <= 3 and len(lines) >= 5


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "argv", "expected"),
    [
        (
            "summary of a missing dir",
            ["traces", "summary", "{tmp}/nope"],
            "traces directory '{tmp}/nope' does not exist: pass the --traces directory",
        ),
        (
            "summary of a dir without traces",
            ["traces", "summary", "{tmp}"],
            "no trace files in '{tmp}'",
        ),
        (
            "show unknown trace",
            ["traces", "show", "{traces}", "abcdef12"],
            "no trace 'abcdef12' in '{traces}'; some trace ids there: " + TRACE_2,
        ),
        (
            "show ambiguous prefix",
            ["traces", "show", "{traces}", "1111aa"],
            f"trace id '1111aa' is ambiguous in '{{traces}}': it matches {TRACE_1}, {TRACE_2}",
        ),
        (
            "show short prefix",
            ["traces", "show", "{traces}", "111"],
            "give at least 6 hex characters",
        ),
        (
            "export unknown format",
            ["traces", "export", "{traces}", "--format", "zipkin"],
            "unknown --format 'zipkin': choose one of otlp-json",
        ),
        (
            "export into a missing dir",
            ["traces", "export", "{traces}", "-f", "otlp-json", "-o", "{tmp}/no/such.jsonl"],
            "cannot write '{tmp}/no/such.jsonl'",
        ),
    ],
)
def test_bad_input_gives_one_clear_message_and_exit_2(
    runner: CliRunner, tmp_path: Path, case: str, argv: list[str], expected: str
) -> None:
    traces = sample_traces(tmp_path / "traces")
    empty = tmp_path / "empty"
    empty.mkdir()

    def fill(text: str) -> str:
        return text.replace("{traces}", str(traces)).replace("{tmp}", str(empty))

    result = runner.invoke(app, [fill(arg) for arg in argv])

    assert result.exit_code == 2, (case, result.output)
    assert result.stdout == "", case
    assert result.stderr.startswith("error: "), (case, result.stderr)
    assert result.stderr.count("error:") == 1, (case, result.stderr)
    assert fill(expected) in result.stderr, (case, result.stderr)
    assert "Traceback" not in result.output


def test_failed_export_leaves_no_file_behind(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "spans.jsonl"
    bad_part = part_path(tmp_path / "traces", "2025-03-04", "job-a", "w1-000001")
    bad_part.parent.mkdir(parents=True)
    bad_part.write_bytes(b"PAR1 torn")

    result = runner.invoke(app, ["traces", "export", str(tmp_path / "traces"), "-f",
                                 "otlp-json", "-o", str(out)])  # fmt: skip

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: cannot read the traces in")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traces"]


def test_export_defaults_to_otlp_json_and_refuses_an_unknown_format(
    runner: CliRunner, traces: Path
) -> None:
    result = runner.invoke(app, ["traces", "export", str(traces)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    requests = [json.loads(line)["resourceSpans"][0]["scopeSpans"][0] for line in lines]
    assert sum(len(request["spans"]) for request in requests) == 14

    bad = runner.invoke(app, ["traces", "export", str(traces), "--format", "xml"])
    assert bad.exit_code == 2
    assert "unknown --format 'xml': choose one of otlp-json, otlp-proto" in bad.stderr


def test_traces_commands_are_listed_and_load_duckdb_lazily() -> None:
    """A real process: the help lists the commands; importing the CLI does not load duckdb."""
    help_run = subprocess.run(
        [sys.executable, "-m", "fanout", "traces", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_run.returncode == 0
    for command in ("summary", "show", "export"):
        assert f"  {command} " in help_run.stdout

    probe = subprocess.run(
        [sys.executable, "-c", "import sys, fanout.cli; print('duckdb' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "False", probe.stderr
