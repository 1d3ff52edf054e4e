"""Streaming on the native protocols (Anthropic's server-sent events, Gemini's
``streamGenerateContent?alt=sse``, Bedrock's ConverseStream event-stream frames) against
the emulator on loopback: streamed text with time to first token in the trace, a
streamed agent's tool calls over two turns, a cut stream retried with what arrived
discarded, an overloaded error mid-stream classified, the secrets in no log, trace or
error; and one pipeline file streaming on all five kinds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel
from support import Emulator, ListSink, start_emulator
from support_protocols import MODELS, aws_env
from support_protocols import provider as shared_provider
from typer.testing import CliRunner

from fanout import DAG, Engine, parse_config
from fanout.cli import app
from fanout.config import Config
from fanout.run import TokenEvent
from fanout.sim.server import EmulatorConfig
from fanout.trace import trace_files

KEY = "sk-fanout-protostream-0123456789-SECRET"
AWS_KEY_ID = "AKIAFANOUTSTREAM0EXMP"
AWS_SECRET = "fanoutStreamSecretAccessKey/0123456789SECRETaws"
NATIVE = ("anthropic", "gemini", "bedrock")  # Azure streams OpenAI's chunks
OVERLOADED_STATUS = {"anthropic": 529, "gemini": 503, "bedrock": 503}
TEXT = "the parcel came late and the box was damaged but the support team was kind"
PIPELINE = Path(__file__).parent / "pipelines" / "everywhere.py"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    cfg = EmulatorConfig(api_key=KEY, latency_ms=10, latency_per_token_ms=1, seed=3)
    with start_emulator(cfg) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    emulator.reset()
    emulator.faults(cut_streams=0, overload_streams=0)
    aws_env(monkeypatch, tmp_path, key_env="FANOUT_STREAM_KEY", key=KEY,
            aws_key_id=AWS_KEY_ID, aws_secret=AWS_SECRET)  # fmt: skip


def provider(protocol: str, root: str) -> dict[str, object]:
    """The shared table without its retry (config() sets one; the pipeline test writes
    the table as flat TOML)."""
    table = shared_provider(protocol, root, key_env="FANOUT_STREAM_KEY")
    del table["retry"]
    return table


def config(protocol: str, emulator: Emulator, *, max_attempts: int = 3) -> Config:
    retry = {"max_attempts": max_attempts, "initial_backoff_s": 0.01, "max_backoff_s": 0.05}
    return parse_config(
        {
            "providers": {protocol: {**provider(protocol, emulator.root), "retry": retry}},
            "models": {
                "m": {
                    "provider": protocol,
                    "model": MODELS[protocol],
                    "input_usd_per_mtok": 3.0,
                    "output_usd_per_mtok": 15.0,
                }
            },
        }
    )


def summary_dag(*, stream: bool) -> DAG:
    dag = DAG("streamed")
    dag.input("text")
    dag.output(summary=dag.llm("m", "Summarise: {text}", stream=stream, name="summary"))
    return dag


def attempts(traces: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in trace_files(traces).parts:
        rows += [r for r in pq.read_table(path).to_pylist() if r["record_type"] == "attempt"]
    return sorted(rows, key=lambda r: r["attempt"])  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize("protocol", [*NATIVE, "azure"])
async def test_streamed_text_is_the_whole_reply_with_its_first_token_traced(
    protocol: str, emulator: Emulator, tmp_path: Path
) -> None:
    heard: list[TokenEvent] = []
    cfg = config(protocol, emulator)
    async with Engine(cfg) as engine:
        plain = await engine.run(summary_dag(stream=False), {"text": TEXT})
    async with Engine(cfg, traces=tmp_path) as engine:
        streamed = await engine.run(summary_dag(stream=True), {"text": TEXT}, on_token=heard.append)

    assert streamed.status == "ok", streamed.error_message
    assert streamed.outputs == plain.outputs
    assert streamed.usage == plain.usage and streamed.usage.input_tokens > 0
    assert streamed.cost_usd == plain.cost_usd > 0
    assert len(heard) > 3  # a piece of text per event, not the reply in one
    assert "".join(e.text for e in heard) == streamed.outputs["summary"]
    assert emulator.stats()["streams"] == 1
    (row,) = attempts(tmp_path)
    assert row["streamed"] is True and row["status"] == "ok"
    assert 0 < row["time_to_first_token_ms"] < row["duration_ms"]  # type: ignore[operator]
    assert row["output_tokens_per_s"] > 0  # type: ignore[operator]
    assert row["output_tokens"] == plain.usage.output_tokens


def _agent(*, output: type[BaseModel] | None = None) -> tuple[DAG, list[int]]:
    seen: list[int] = []

    def lookup(id: int) -> str:
        """Look an order up by its id."""
        seen.append(id)
        return f"order {id} shipped"

    script = '[sim:tools=lookup({{"id": 1}})|lookup({{"id": 2}})]'
    dag = DAG("agent")
    dag.input("text")
    dag.output(
        answer=dag.llm("m", script + " Where are my orders? {text}", tools=[lookup],
                       output=output, max_steps=4, name="agent", stream=True)
    )  # fmt: skip
    return dag, seen


@pytest.mark.parametrize("protocol", NATIVE)
async def test_a_streamed_agent_calls_its_tool_over_two_turns(
    protocol: str, emulator: Emulator
) -> None:
    dag, seen = _agent()
    async with Engine(config(protocol, emulator)) as engine:
        result = await engine.run(dag, {"text": "thanks"})

    assert result.status == "ok", result.error_message
    assert seen == [1, 2]  # each call's arguments were put together from their fragments
    assert result.nodes["agent"].calls == 3
    assert emulator.stats()["streams"] == 3
    assert str(result.outputs["answer"]).startswith("Based on lookup: order 1 shipped")
    transcript = result.nodes["agent"].transcript or []
    calls = [c for m in transcript for c in m.get("tool_calls") or ()]
    assert [c["function"]["arguments"] for c in calls] == ['{"id":1}', '{"id":2}']


class Verdict(BaseModel):
    label: str
    score: float


@pytest.mark.parametrize("protocol", NATIVE)
async def test_streamed_structured_output_alone_and_after_tools(
    protocol: str, emulator: Emulator
) -> None:
    dag = DAG("verdict")
    dag.input("text")
    dag.output(verdict=dag.llm("m", "Judge: {text}", output=Verdict, stream=True))
    agent, seen = _agent(output=Verdict)
    async with Engine(config(protocol, emulator)) as engine:
        alone = await engine.run(dag, {"text": "fine"})
        after = await engine.run(agent, {"text": "thanks"})

    assert isinstance(alone.outputs["verdict"], Verdict), alone.error_message
    assert isinstance(after.outputs["answer"], Verdict), after.error_message
    assert seen == [1, 2]


@pytest.mark.parametrize("protocol", [*NATIVE, "azure"])
async def test_a_cut_stream_is_retried_whole_and_the_secrets_stay_out(
    protocol: str, emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.faults(cut_streams=1)
    heard: list[TokenEvent] = []
    async with Engine(config(protocol, emulator), traces=tmp_path) as engine:
        result = await engine.run(summary_dag(stream=True), {"text": TEXT}, on_token=heard.append)
        shown = repr(engine.providers[protocol])

    assert result.status == "ok", result.error_message
    summary = result.outputs["summary"]
    stats = emulator.stats()
    assert stats["streams"] == 2 and stats["streams_cut"] == 1
    first, second = attempts(tmp_path)
    assert first["error_type"] == "StreamCut" and first["retryable"] is True
    assert "discarded" in str(first["error_message"])
    assert second["status"] == "ok" and second["streamed"] is True
    # the cut attempt's pieces, word that they are void, then the whole reply again
    discards = [i for i, e in enumerate(heard) if e.discard]
    assert len(discards) == 1 and heard[discards[0]].attempt == 1
    before, after = heard[: discards[0]], heard[discards[0] + 1 :]
    assert before and {e.attempt for e in before} == {1}
    assert "".join(e.text for e in after) == summary
    assert len("".join(e.text for e in before)) < len(summary)
    assert result.usage.output_tokens == second["output_tokens"]  # only the whole reply's
    files = trace_files(tmp_path)
    secrets = (KEY, AWS_SECRET)
    for path in [*files.parts, *files.segments]:
        assert not [s for s in secrets if s.encode() in path.read_bytes()]
    everything = [shown, caplog.text, str(result), str(first["error_message"])]
    assert not [text for text in everything for s in secrets if s in text]


@pytest.mark.parametrize("protocol", NATIVE)
async def test_an_overloaded_error_mid_stream_is_retried_and_is_no_rate_limit(
    protocol: str, emulator: Emulator
) -> None:
    emulator.faults(overload_streams=1)
    sink = ListSink()
    heard: list[TokenEvent] = []
    async with Engine(config(protocol, emulator), traces=sink) as engine:
        result = await engine.run(summary_dag(stream=True), {"text": TEXT}, on_token=heard.append)
        (state,) = engine.limiter_states()

    assert result.status == "ok", result.error_message
    first, second = [s for s in sink.spans if s.record_type == "attempt"]
    assert (first.error_type, first.http_status, first.retryable) == (
        "ProviderHTTPError", OVERLOADED_STATUS[protocol], True
    )
    assert second.error_type is None and second.streamed is True
    assert [e.attempt for e in heard if e.discard] == [1]  # the pieces before it are void
    assert state.rate_limited == 0  # overloaded never slows the limiter
    assert emulator.stats()["streams"] == 2


@pytest.mark.parametrize("protocol", NATIVE)
async def test_an_overloaded_stream_with_no_retry_left_fails_the_step_classified(
    protocol: str, emulator: Emulator
) -> None:
    emulator.faults(overload_streams=1)
    async with Engine(config(protocol, emulator, max_attempts=1)) as engine:
        result = await engine.run(summary_dag(stream=True), {"text": TEXT})

    node = result.nodes["summary"]
    assert node.error_type == "ProviderHTTPError"
    assert str(OVERLOADED_STATUS[protocol]) in (node.error_message or "")


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "azure", "bedrock", "gemini"])
def test_the_same_pipeline_file_streams_on_every_protocol(
    protocol: str, emulator: Emulator, tmp_path: Path
) -> None:
    """Only the config's ``fast`` alias changes; ``stream = true`` streams its every call."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "great, thanks"}\n{"id": "b", "text": "awful"}\n')
    table = provider(protocol, emulator.root)
    lines = [f"[providers.{protocol}]"]
    lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
    lines += ["", "[models.fast]", f'provider = "{protocol}"', f'model = "{MODELS[protocol]}"',
              "stream = true"]  # fmt: skip
    (tmp_path / "fanout.toml").write_text("\n".join(lines) + "\n")
    args = ["run", f"{PIPELINE}:dag", "-i", str(source), "-o", str(tmp_path / "out"),
            "-c", str(tmp_path / "fanout.toml"), "--key", "id", "--no-traces"]  # fmt: skip

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "out" / "results").to_pylist()}
    assert (rows["a"]["output_label"], rows["b"]["output_label"]) == ("positive", "negative")
    assert all(str(r["output_answer"]).startswith("Based on lookup") for r in rows.values())
    assert all("priority" in str(r["output_triage"]) for r in rows.values())
    # per record: the label, the agent's three turns, the triage; each call streamed
    assert emulator.stats()["streams"] == 2 * 5


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


@pytest.mark.parametrize("protocol", ["anthropic", "azure"])
async def test_a_streamed_replys_headers_teach_the_limiter(protocol: str) -> None:
    limited = EmulatorConfig(api_key=KEY, requests_per_min=600, burst_s=10)
    with start_emulator(limited) as emulator:
        async with Engine(config(protocol, emulator)) as engine:
            for n in range(3):
                result = await engine.run(summary_dag(stream=True), {"text": f"review {n}"})
                assert result.status == "ok", result.error_message
            (state,) = engine.limiter_states()
        assert emulator.stats()["streams"] == 3

    assert state.requests_per_min == pytest.approx(594.0)  # 99% of the stated 600/min


@pytest.mark.parametrize("protocol", ["anthropic", "gemini", "azure"])
async def test_a_rejected_key_on_a_stream_is_in_no_error_log_or_trace(
    protocol: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    wrong = "sk-wrong-stream-9876543210-SECRET"
    monkeypatch.setenv("FANOUT_STREAM_KEY", wrong)
    caplog.set_level(logging.DEBUG)
    sink = ListSink()
    async with Engine(config(protocol, emulator), traces=sink) as engine:
        result = await engine.run(summary_dag(stream=True), {"text": TEXT})

    node = result.nodes["summary"]
    assert node.error_type == "ProviderHTTPError" and "401" in (node.error_message or "")
    assert emulator.stats()["streams"] == 0  # refused before any stream began
    everything = [caplog.text, str(result), *(repr(s) for s in sink.spans)]
    assert not [text for text in everything if wrong in text or "9876543210" in text]
