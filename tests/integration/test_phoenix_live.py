"""fanout's live OpenTelemetry export into a real Arize Phoenix, read back through
Phoenix's own client (the recipe of docs/traces.md, as a user runs it).

Phoenix (``pip install arize-phoenix``, ~850 MB) lives in a venv of its own, built once
and cached (tests/support_venv.py); ``phoenix serve`` runs on free loopback ports with
its working directory in the test's tmp. fanout runs from this venv (``fanout run``
and ``fanout serve`` processes) with only the standard ``OTEL_*`` variables set. The
spans are read with ``phoenix.client.Client().spans.get_spans_dataframe`` and the costs
Phoenix computed with its GraphQL API (what its UI shows), and both are compared with
the Parquet trace of the same run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from support import Emulator, emulator_process, free_port
from support_venv import ROOT, cached_venv

pytestmark = [
    pytest.mark.slow,  # Phoenix starts in ~15 s; its venv builds in ~3 min on first use
    pytest.mark.timeout(1800),
]

DRIVER = Path(__file__).parent / "drivers" / "phoenix_spans.py"
AGENT = f"{ROOT / 'examples' / 'pipelines' / 'agent.py'}:dag"
CLASSIFY = f"{ROOT / 'examples' / 'pipelines' / 'classify.py'}:dag"
QUESTIONS = ROOT / "examples" / "data" / "questions.jsonl"
INPUT_USD, OUTPUT_USD = 3.0, 15.0  # per million tokens, in fanout's config and Phoenix's
# a wait's span: its name, and the bits flipped in its attempt's span id to make its id
WAITS = {
    "limiter_wait_ms": ("fanout.limiter_wait", 0x8 << 60),
    "hedge_delay_ms": ("fanout.hedge_delay", 0x4 << 60),
    "backoff_ms": ("fanout.retry_backoff", 0x2 << 60),
}


@dataclass
class Phoenix:
    url: str
    python: Path

    def spans(self, project: str, count: int, tmp_path: Path) -> dict[str, Any]:
        """The project's spans as Phoenix's client reads them (waiting for ``count``)."""
        result = tmp_path / f"phoenix-{project}.json"
        done = subprocess.run(
            [str(self.python), str(DRIVER), self.url, project, str(count), str(result)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-4000:]
        report: dict[str, Any] = json.loads(result.read_text("utf-8"))
        return report

    def graphql(self, query: str, **variables: object) -> dict[str, Any]:
        reply = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30
        )
        reply.raise_for_status()
        body: dict[str, Any] = reply.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    def price(self, model: str) -> None:
        """Give ``model`` fanout's price in Phoenix's table of models (what Settings >
        Models does in its UI): Phoenix prices a span from that table, at ingestion.
        Returns once Phoenix prices a probe span with it (it reloads the table every
        few seconds)."""
        costs = [
            {"tokenType": "input", "costPerMillionTokens": INPUT_USD, "kind": "PROMPT"},
            {"tokenType": "output", "costPerMillionTokens": OUTPUT_USD, "kind": "COMPLETION"},
        ]
        model_input = {"name": model, "namePattern": f"^{model}$", "provider": "openai"}
        created = self.graphql(PRICE, input=model_input | {"costs": costs})
        assert created["createModel"]["model"]["name"] == model
        probe = f"price-probe-{model}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            send_probe_span(self.url, probe, model)
            time.sleep(1.0)
            if any(c and c["total"]["cost"] for c in self.costs(probe)[1].values()):
                return
        raise AssertionError(f"Phoenix did not price {model} within 60 s")

    def costs(self, project: str) -> tuple[float | None, dict[str, dict[str, Any] | None]]:
        """What Phoenix itself computed: the project's total cost and each span's."""
        data = self.graphql(COSTS)
        nodes = [e["node"] for e in data["projects"]["edges"] if e["node"]["name"] == project]
        if not nodes:
            return None, {}
        (node,) = nodes
        spans = {
            e["node"]["context"]["spanId"]: e["node"]["costSummary"] for e in node["spans"]["edges"]
        }
        return node["costSummary"]["total"]["cost"], spans


COSTS = """{ projects { edges { node { name costSummary { total { cost } }
  spans(first: 1000) { edges { node { context { spanId } costSummary {
    prompt { cost tokens } completion { cost tokens } total { cost tokens } } } } } } } } }"""

PRICE = """mutation($input: CreateModelMutationInput!) {
  createModel(input: $input) { model { id name } } }"""


def send_probe_span(url: str, project: str, model: str) -> None:
    """One LLM span of a million prompt tokens of ``model``, straight through the
    OpenTelemetry SDK (not fanout), into ``project``."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource({"openinference.project.name": project}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"{url}/v1/traces")))
    attributes = {"openinference.span.kind": "LLM", "llm.model_name": model,
                  "llm.provider": "openai", "llm.token_count.prompt": 1_000_000,
                  "llm.token_count.completion": 0, "llm.token_count.total": 1_000_000}  # fmt: skip
    with provider.get_tracer("fanout-tests").start_as_current_span("probe", attributes=attributes):
        pass
    provider.shutdown()


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    bin_dir = cached_venv("phoenix-venv", ["arize-phoenix", "arize-phoenix-client"])
    work = tmp_path_factory.mktemp("phoenix")
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))}
    env |= {
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    }
    log = (work / "phoenix.log").open("w")
    proc = subprocess.Popen(
        [str(bin_dir / "phoenix"), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/healthz", proc, work / "phoenix.log")
        yield Phoenix(url, bin_dir / "python")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def wait_until_up(url: str, proc: subprocess.Popen[Any], log: Path | None = None) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            said = log.read_text("utf-8")[-4000:] if log else ""
            raise AssertionError(f"{url} did not come up:\n{said}")
        time.sleep(0.3)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with emulator_process("--record-prompts", "--latency-ms", "20") as emu:
        yield emu


def otel_env(phoenix: Phoenix, project: str) -> dict[str, str]:
    """The standard variables only, as docs/traces.md's recipe sets them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return env | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.url,
        "OTEL_SERVICE_NAME": "fanout-phoenix-check",
        "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
    }


def config_toml(
    path: Path, base_url: str, model: str, usd: tuple[float, float] = (INPUT_USD, OUTPUT_USD)
) -> Path:
    path.write_text(
        f"""
[providers.emu]
kind = "openai"
base_url = "{base_url}"
max_concurrency = 1
retry = {{ max_attempts = 3, initial_backoff_s = 0.05 }}

[models.fast]
provider = "emu"
model = "{model}"
input_usd_per_mtok = {usd[0]}
output_usd_per_mtok = {usd[1]}

[models.smart]
provider = "emu"
model = "{model}"
input_usd_per_mtok = {usd[0]}
output_usd_per_mtok = {usd[1]}
""",
        encoding="utf-8",
    )
    return path


def expected_spans(rows: list[dict[str, Any]]) -> dict[str, str]:
    """span id -> name of every span the export sends: a row's, and each wait's."""
    names = {r["span_id"]: r["span_name"] for r in rows}
    for row in rows:
        if row["record_type"] != "attempt":
            continue
        for column, (name, bits) in WAITS.items():
            if (row[column] or 0) > 0:
                names[f"{int(row['span_id'], 16) ^ bits:016x}"] = name
    return names


def check_tree(spans: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """Phoenix holds exactly the exported spans, each under its row's parent."""
    assert set(spans) == set(expected_spans(rows))
    for row in rows:
        span = spans[row["span_id"]]
        assert span["name"] == row["span_name"]
        assert span["context.trace_id"] == row["trace_id"]
        assert span.get("parent_id") == row["parent_span_id"]
    for span in spans.values():
        parent = span.get("parent_id")
        if span["name"].startswith("run "):
            continue  # a run's parent may be the caller's span, which is not Phoenix's
        assert parent in spans, span  # every parent present: the tree is complete


def check_attempts(
    spans: dict[str, dict[str, Any]], rows: list[dict[str, Any]], costs: dict[str, Any]
) -> None:
    """Each provider call: an LLM span with the row's tokens and costs, as attributes
    and as the cost Phoenix computed from its price of the model (``costs``)."""
    for row in (r for r in rows if r["record_type"] == "attempt"):
        span = spans[row["span_id"]]
        attrs = span["attributes"]
        if row["span_name"].startswith("execute_tool "):
            assert span["span_kind"] == "TOOL"
            assert not [k for k in attrs if "token_count" in k or k.startswith("llm.cost")]
            continue
        assert span["span_kind"] == "LLM"
        assert span["status_code"] == ("OK" if row["status"] == "ok" else "ERROR")
        if row["status"] != "ok":
            continue
        assert attrs["llm.token_count.prompt"] == row["input_tokens"]
        assert attrs["llm.token_count.completion"] == row["output_tokens"]
        assert attrs["llm.token_count.total"] == row["input_tokens"] + row["output_tokens"]
        assert attrs["llm.cost.total"] == pytest.approx(row["cost_usd"])
        assert attrs["llm.cost.prompt"] == pytest.approx(row["input_cost_usd"])
        assert attrs["llm.provider"] == "openai" and attrs["gen_ai.provider.name"] == "openai"
        phoenix_cost = costs[row["span_id"]]
        assert phoenix_cost is not None, f"Phoenix priced no cost for {row['span_id']}"
        assert phoenix_cost["total"]["cost"] == pytest.approx(row["cost_usd"])
        assert phoenix_cost["prompt"]["cost"] == pytest.approx(row["input_cost_usd"])
        assert phoenix_cost["total"]["tokens"] == row["input_tokens"] + row["output_tokens"]


def test_a_batch_job_reaches_phoenix_with_every_attempt_its_tree_tokens_and_costs(
    phoenix: Phoenix, emulator: Emulator, tmp_path: Path
) -> None:
    project = "fanout-batch"
    phoenix.price("sim-small")
    records = tmp_path / "questions.jsonl"
    retried = {"id": "q-05", "question": "How long does the kettle boil? [sim:fail-once]"}
    records.write_text(QUESTIONS.read_text("utf-8") + json.dumps(retried) + "\n", "utf-8")
    config = config_toml(tmp_path / "fanout.toml", emulator.base_url, "sim-small")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fanout", "run", AGENT, "-i", str(records), "-o",
               str(out), "--key", "id", "-c", str(config)]  # fmt: skip
    done = subprocess.run(
        command, env=otel_env(phoenix, project), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]

    rows = pq.read_table(out / "traces").to_pylist()
    report = phoenix.spans(project, len(expected_spans(rows)), tmp_path)
    assert project in report["projects"]  # named by OTEL_RESOURCE_ATTRIBUTES alone
    spans = {s["span_id"]: s for s in report["spans"]}
    check_tree(spans, rows)
    attempts = [r for r in rows if r["record_type"] == "attempt"]
    calls = [r for r in attempts if r["span_name"].startswith("chat ")]
    stats = emulator.stats()
    # every attempt present: each call the emulator took, the failed ones included (the
    # marked record fails the first try of each of its turns)
    failed = [r for r in calls if r["status"] != "ok"]
    assert len(calls) == stats["accepted"] and len(failed) == stats["errors"] >= 1
    assert {r["record_key"] for r in failed} == {"q-05"}
    assert [spans[r["span_id"]]["status_code"] for r in failed] == ["ERROR"] * len(failed)
    tools = [r for r in attempts if r["span_name"].startswith("execute_tool ")]
    assert len(tools) >= 5 and len(calls) + len(tools) == len(attempts)  # the agent's tools
    assert {spans[r["span_id"]]["name"] for r in rows if r["record_type"] == "run"} == {
        "run kitchen_agent"
    }
    total, costs = phoenix.costs(project)
    check_attempts(spans, rows, costs)
    billed = sum(r["cost_usd"] or 0.0 for r in calls)
    assert total == pytest.approx(billed)  # the project's cost, as Phoenix's UI sums it
    kinds = sorted({s["span_kind"] for s in spans.values()})
    print(
        f"phoenix: {len(spans)} spans of {len(rows)} rows ({kinds}); {len(calls)} calls, "
        f"{stats['errors']} failed; cost in Phoenix ${total:.6f}, in Parquet ${billed:.6f}"
    )


def test_a_service_request_reaches_phoenix_under_its_callers_trace(
    phoenix: Phoenix, emulator: Emulator, tmp_path: Path
) -> None:
    """``fanout serve`` with the same variables; its model has no price in Phoenix, so
    Phoenix computes no cost while fanout's ``llm.cost.*`` attributes hold it."""
    project = "fanout-service"
    config = config_toml(tmp_path / "fanout.toml", emulator.base_url, "sim-large")
    port = free_port()
    traces = tmp_path / "traces"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "serve", CLASSIFY, "-c", str(config), "--port",
         str(port), "--no-auth", "--traces", str(traces)],
        env=otel_env(phoenix, project) | {"OTEL_BSP_SCHEDULE_DELAY": "100"},
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", proc)
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/pipelines/classify/runs",
            json={"inputs": {"text": "The kettle is great"}},
            headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"}, timeout=30,
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the engine closes, the sinks flush
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-4000:]  # EXIT_INTERRUPTED (docs/failures.md)
    rows = pq.read_table(traces).to_pylist()
    report = phoenix.spans(project, len(expected_spans(rows)), tmp_path)
    spans = {s["span_id"]: s for s in report["spans"]}
    check_tree(spans, rows)
    (run,) = [s for s in spans.values() if s["name"].startswith("run ")]
    assert run["context.trace_id"] == caller_trace and run["parent_id"] == caller_span
    _, costs = phoenix.costs(project)
    for row in (r for r in rows if r["record_type"] == "attempt"):
        attrs = spans[row["span_id"]]["attributes"]
        assert attrs["llm.cost.total"] == pytest.approx(row["cost_usd"]) and row["cost_usd"] > 0
        summary = costs[row["span_id"]]  # tokens counted, no price: no cost of Phoenix's
        assert summary is None or summary["total"]["cost"] is None, summary


def test_a_model_in_phoenixs_own_table_is_priced_by_phoenix_as_fanout_prices_it(
    phoenix: Phoenix, emulator: Emulator, tmp_path: Path
) -> None:
    """gpt-4o-mini (the emulator answers any model name) is in Phoenix's built-in table:
    with fanout's config at the same list price, Phoenix's cost is fanout's, no setup."""
    project = "fanout-listed-model"
    config = config_toml(tmp_path / "fanout.toml", emulator.base_url, "gpt-4o-mini", (0.15, 0.6))
    records = tmp_path / "in.jsonl"
    records.write_text("".join(json.dumps({"text": f"review {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fanout", "run", CLASSIFY, "-i", str(records), "-o",
               str(out), "-c", str(config)]  # fmt: skip
    done = subprocess.run(
        command, env=otel_env(phoenix, project), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = pq.read_table(out / "traces").to_pylist()
    report = phoenix.spans(project, len(expected_spans(rows)), tmp_path)
    spans = {s["span_id"]: s for s in report["spans"]}
    check_tree(spans, rows)
    total, costs = phoenix.costs(project)
    check_attempts(spans, rows, costs)
    assert total == pytest.approx(sum(r["cost_usd"] or 0.0 for r in rows))
