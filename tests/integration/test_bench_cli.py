"""``fanout bench`` and ``fanout plan`` from the command line: the report files, figures that
agree with the emulator's own counts, replay of an earlier run, and one clear error (exit 2)
for a bad arrival spec, emulator spec or pipeline."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from support import start_emulator
from typer.testing import CliRunner

from fanout.bench import replay_arrivals
from fanout.cli import app
from fanout.sim.server import EmulatorConfig
from fanout.trace import connect

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = f"{ROOT / 'examples' / 'pipelines' / 'classify.py'}:dag"
PNG = b"\x89PNG\r\n\x1a\n"
FULL_TRACES = """
[providers.sim]
kind = "sim"
latency_ms = 20
jitter_sigma = 0

[models.fast]
provider = "sim"
model = "sim-small"

[models.smart]
provider = "sim"
model = "sim-large"

[traces]
content = "full"
"""
HTTP_CONFIG = """
[providers.vendor]
kind = "openai"
base_url = "{base_url}"
api_key_env = "BENCH_TEST_KEY"
requests_per_min = 600
max_concurrency = 16

[models.fast]
provider = "vendor"
model = "m-small"

[models.smart]
provider = "vendor"
model = "m-large"
"""

# 16 connections (each 8 of them cost the HTTP client an SSL context to build) and short
# back-offs: the retries of the emulator's 500s end soon after the arrivals
EMULATED = """
[providers.sim]
kind = "sim"
max_concurrency = 16

[providers.sim.retry]
initial_backoff_s = 0.05

[models.fast]
provider = "sim"
model = "sim-small"

[models.smart]
provider = "sim"
model = "sim-large"
"""


@pytest.fixture(scope="module")
def emulated_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One bench against an emulator with 10% 500s (so there are retries and errors)."""
    out = tmp_path_factory.mktemp("bench") / "report"
    config = out.parent / "emulated.toml"
    config.write_text(EMULATED, encoding="utf-8")
    result = CliRunner().invoke(
        app,
        [
            "bench", CLASSIFY, "--config", str(config), "--arrivals", "poisson:25/s",
            "--duration", "3s",
            "--emulate", "rpm=1200,latency=lognormal:30ms:0.3,errors=0.1",
            "--report", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, result.stdout


def test_bench_writes_report_json_plots_and_html(emulated_report: tuple[Path, str]) -> None:
    out, stdout = emulated_report
    assert "fanout bench: classify" in stdout and "per provider/model" in stdout
    for name in ("throughput.png", "latency_cdf.png", "node_time.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5_000, name
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 3
    # the page carries the tables the terminal prints, with their percentiles
    for title in ("per provider/model", "per node (mean time", "errors by type"):
        assert title in page and title in stdout, title
    assert "limiter wait p50/p99 ms" in page and "call p50/p90/p99/max ms" in page
    assert "ProviderHTTPError" in page  # the emulator's 500s, by type
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["setup"]["arrivals"] == "poisson:25/s"
    assert report["setup"]["emulate"]["requests_per_min"] == 1200
    assert set(report["latency_ms"]["per_node"]) == {"label"}


def test_bench_figures_agree_with_the_emulators_own_counts(
    emulated_report: tuple[Path, str],
) -> None:
    report = json.loads((emulated_report[0] / "report.json").read_text(encoding="utf-8"))
    emulator, requests = report["emulator"], report["requests"]
    (provider,) = report["providers"]
    assert provider["accepted"] == emulator["accepted"] > 0
    assert provider["rate_limited"] == emulator["limited"]
    assert provider["errors"] == emulator["errors"] > 0  # the 500s, as the emulator counted
    assert provider["retries"] >= emulator["errors"] - requests["by_status"].get("error", 0)
    assert provider["tokens"] == emulator["tokens"]  # what the provider billed
    assert sum(report["timeline"]["calls"]["sim/sim-small"]) == emulator["accepted"]
    assert report["errors"]["attempts_by_type"].get("ProviderHTTPError") == emulator["errors"]
    # every request is accounted for, once
    assert requests["offered"] == requests["completed"] + requests["unfinished"]
    assert sum(requests["by_status"].values()) == requests["completed"]
    assert sum(report["timeline"]["offered"]) == requests["offered"]
    # the report's own figures are consistent with each other
    ok_tokens = report["tokens"]["input"] + report["tokens"]["output"]
    assert ok_tokens == provider["tokens"]  # tokens of calls that failed are not billed
    assert report["latency_ms"]["end_to_end"]["count"] == requests["completed"]


def test_plan_check_prints_the_error_per_figure(emulated_report: tuple[Path, str]) -> None:
    out = emulated_report[0]
    result = CliRunner().invoke(app, ["plan", CLASSIFY, "--check", str(out)])
    assert result.exit_code == 0, result.output
    assert "plan vs bench" in result.stdout and "throughput, records/s" in result.stdout
    as_json = CliRunner().invoke(app, ["plan", CLASSIFY, "--check", str(out), "--json"])
    data = json.loads(as_json.stdout)
    figures = {row["figure"]: row for row in data["check"]}
    tokens = figures["tokens per record"]
    assert tokens["error"] == pytest.approx(
        (tokens["predicted"] - tokens["measured"]) / tokens["measured"]
    )
    assert abs(tokens["error"]) < 0.1  # the same templates, the same token counts
    assert data["binding"]["kind"] in ("rpm", "arrivals")


def test_replay_sends_the_recorded_arrivals_and_inputs(tmp_path: Path) -> None:
    config = tmp_path / "full.toml"
    config.write_text(FULL_TRACES, encoding="utf-8")
    first = tmp_path / "first"
    args = ["--config", str(config), "--duration", "2s", "--warmup", "1s"]
    result = CliRunner().invoke(
        app, ["bench", CLASSIFY, "--arrivals", "burst:5/1s", *args, "--report", str(first)]
    )
    assert result.exit_code == 0, result.output
    again = tmp_path / "again"
    result = CliRunner().invoke(
        app,
        ["bench", CLASSIFY, "--arrivals", f"replay:{first / 'traces'}", *args,
         "--report", str(again)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    one = json.loads((first / "report.json").read_text(encoding="utf-8"))
    two = json.loads((again / "report.json").read_text(encoding="utf-8"))
    assert one["requests"]["offered"] == two["requests"]["offered"] == 10
    # the replay offers at the first run's recorded start times (two bursts of five a
    # second apart, each run started when the loaded machine got to it): per second, the
    # same counts as those times
    recorded = [a.at_s for a in replay_arrivals(first / "traces") if a.at_s is not None]
    expected = [0] * (int(max(recorded)) + 1)
    for at in recorded:
        expected[int(at)] += 1
    assert sum(expected) == 10
    assert two["timeline"]["offered"][: len(expected)] == expected
    assert two["setup"]["inputs"] == f"replay of {first / 'traces'}"
    assert two["tokens"] == one["tokens"]  # the same inputs, so the same prompts


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--arrivals", "poison:5/s"], "--arrivals 'poison:5/s': unknown kind 'poison'; use"),
        (["--arrivals", "poisson:lots"], "--arrivals 'poisson:lots': 'lots' is not a rate"),
        (["--arrivals", "closed:0"], "closed:CLIENTS needs a whole number of clients"),
        (["--arrivals", "constant:5/s", "--duration", "0s"], "--duration '0s': must be more"),
        (["--arrivals", "constant:5/s", "--emulate", "rpm=x"], "--emulate 'rpm=x': rpm='x'"),
        (["--arrivals", "constant:5/s", "--emulate", "latency=lognormal:9ms"], "MEDIAN:SIGMA"),
        (["--arrivals", "replay:{tmp}/none"], "traces directory '{tmp}/none' does not exist"),
        (["--arrivals", "constant:5/s", "--pipeline-swap"], "no such option"),
    ],
)
def test_bench_bad_input_is_one_clear_error(tmp_path: Path, argv: list[str], expected: str) -> None:
    report = tmp_path / "out"
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result = CliRunner().invoke(app, ["bench", CLASSIFY, *args, "--report", str(report)])
    assert result.exit_code == 2, result.output
    assert expected.replace("{tmp}", str(tmp_path)).lower() in result.stderr.lower()
    assert "Traceback" not in result.output
    assert not report.exists(), "nothing is written for bad input"


@pytest.mark.parametrize("command", ["bench", "plan"])
def test_unknown_pipeline_is_one_clear_error(tmp_path: Path, command: str) -> None:
    extra = (
        ["--arrivals", "closed:1", "--report", str(tmp_path / "r")] if command == "bench" else []
    )
    result = CliRunner().invoke(app, [command, f"{tmp_path}/nope.py:dag", *extra])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: pipeline ")
    assert "does not exist; check the path" in result.stderr
    missing_attr = CliRunner().invoke(app, [command, f"{CLASSIFY[:-4]}:nodag", *extra])
    assert missing_attr.exit_code == 2
    assert "has no attribute 'nodag'; DAGs defined in" in missing_attr.stderr


def test_plan_check_of_a_directory_without_a_report(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["plan", CLASSIFY, "--check", str(tmp_path)])
    assert result.exit_code == 2
    assert "no report.json there; pass the --report directory" in result.stderr


def test_replay_of_traces_without_inputs_says_how_to_get_them(tmp_path: Path) -> None:
    first = tmp_path / "hmac"
    ok = CliRunner().invoke(
        app, ["bench", CLASSIFY, "--arrivals", "constant:5/s", "--duration", "1s",
              "--report", str(first)],
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    result = CliRunner().invoke(
        app, ["bench", CLASSIFY, "--arrivals", f"replay:{first / 'traces'}",
              "--report", str(tmp_path / "again")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "has no inputs in the trace" in result.stderr
    assert "content = 'full'" in result.stderr and "--input FILE" in result.stderr


def test_bench_records_without_the_dags_inputs(tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text('{"id": "a", "body": "no text field"}\n', encoding="utf-8")
    result = CliRunner().invoke(
        app, ["bench", CLASSIFY, "--arrivals", "closed:1", "--input", str(records),
              "--report", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "record #0 lacks the DAG's input(s) ['text']" in result.stderr
    assert not (tmp_path / "out").exists()


def test_bench_against_an_http_provider_keeps_its_key_out_of_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-bench-" + secrets.token_hex(16)
    monkeypatch.setenv("BENCH_TEST_KEY", key)
    out = tmp_path / "out"
    with start_emulator(EmulatorConfig(api_key=key, latency_ms=5)) as emulator:
        config = tmp_path / "http.toml"
        config.write_text(HTTP_CONFIG.format(base_url=emulator.base_url), encoding="utf-8")
        result = CliRunner().invoke(
            app, ["bench", CLASSIFY, "--config", str(config), "--arrivals", "constant:10/s",
                  "--duration", "2s", "--warmup", "1s", "--report", str(out)],
        )  # fmt: skip
        served = emulator.stats()
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    (provider,) = report["providers"]
    assert provider["limit_source"] == "config" and provider["limit_requests_per_min"] == 600
    assert provider["ok"] == served["accepted"] == report["requests"]["ok"] == 20  # no 401
    assert "emulator" not in report  # a real provider: only what fanout saw
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        assert key.encode() not in path.read_bytes(), path
    con = connect(out / "traces")
    try:
        columns = con.execute("DESCRIBE spans").fetchall()
        text_columns = [row[0] for row in columns if row[1] == "VARCHAR"]
        assert "input_text" in text_columns
        for column in text_columns:
            hits = con.execute(
                f"SELECT count(*) FROM spans WHERE {column} LIKE ?", [f"%{key}%"]
            ).fetchone()
            assert hits == (0,), column
    finally:
        con.close()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--arrival-rate", "fast"], "--arrival-rate 'fast': not a rate above zero"),
        (["--arrival-rate", "5/s", "--clients", "4"], "contradict; pass one"),
        (["--emulate", "tpm=many"], "--emulate 'tpm=many': tpm='many' is not a number"),
        (["--records", "0"], "--records"),
    ],
)
def test_plan_bad_input_is_one_clear_error(argv: list[str], expected: str) -> None:
    result = CliRunner().invoke(app, ["plan", CLASSIFY, *argv])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output


def test_plan_answers_the_capacity_question_without_a_call(tmp_path: Path) -> None:
    config = tmp_path / "limits.toml"
    config.write_text(
        FULL_TRACES.replace("latency_ms = 20", "latency_ms = 20\nrequests_per_min = 600")
    )
    result = CliRunner().invoke(
        app, ["plan", CLASSIFY, "--config", str(config), "--records", "1000000", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["records"] == 1_000_000
    assert (data["binding"]["kind"], data["binding"]["where"]) == ("rpm", "sim/sim-small")
    assert data["throughput_per_s"] == pytest.approx(600 * 0.99 / 60)
    # the limiter's one-second bucket of the simulated provider: 10 calls at once
    bucket = 600 / 60
    assert data["wall_time_s"] == pytest.approx(
        (1_000_000 - bucket) / data["throughput_per_s"] + 0.02
    )
    assert data["halve"] == [
        "raise requests_per_min of sim/sim-small from 600 to 1,200 requests/min"
    ]
    text = CliRunner().invoke(app, ["plan", CLASSIFY, "--config", str(config)])
    assert "binding constraint" in text.stdout and "to halve the time:" in text.stdout
    assert "28.1 h" in text.stdout  # 1,000,000 records at 9.9/s


def test_a_report_directory_is_not_overwritten(tmp_path: Path) -> None:
    old = tmp_path / "old" / "traces" / "part.parquet"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an earlier bench")
    result = CliRunner().invoke(
        app, ["bench", CLASSIFY, "--arrivals", "closed:1", "--report", str(tmp_path / "old")]
    )
    assert result.exit_code == 2
    assert "already holds a bench's traces; pick a new directory" in result.stderr
    assert old.read_bytes() == b"an earlier bench"
