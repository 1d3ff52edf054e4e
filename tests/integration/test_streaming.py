"""Streamed llm steps over the OpenAI protocol against the emulator on loopback: SSE
parsing, time to first token and tokens/s in the trace, a cut stream retried with what
arrived discarded, tokens told to a listener, the key absent from every row and error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import Emulator, start_emulator

from fanout import DAG, Engine, parse_config
from fanout.config import Config
from fanout.errors import ConfigError
from fanout.run import TokenEvent
from fanout.sim import FunctionProvider
from fanout.sim.server import EmulatorConfig
from fanout.trace import trace_files
from fanout.types import ChatResponse, Usage

KEY = "sk-fanout-stream-0123456789-SECRET"
TEXT = "the parcel came late and the box was damaged but the support team was kind"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(latency_ms=20, latency_per_token_ms=1, api_key=KEY)
    with start_emulator(config) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _fresh(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.reset()
    emulator.faults(cut_streams=0)
    monkeypatch.setenv("FANOUT_STREAM_KEY", KEY)


def config(emulator: Emulator, *, stream_model: bool = False) -> Config:
    return parse_config(
        {
            "providers": {
                "emu": {
                    "kind": "openai",
                    "base_url": emulator.base_url,
                    "api_key_env": "FANOUT_STREAM_KEY",
                    "retry": {"initial_backoff_s": 0.01, "max_backoff_s": 0.05},
                }
            },
            "models": {
                "fast": {
                    "provider": "emu",
                    "model": "sim-small",
                    "input_usd_per_mtok": 1.0,
                    "output_usd_per_mtok": 2.0,
                    "stream": stream_model,
                }
            },
        }
    )


def summary_dag(*, stream: bool) -> DAG:
    dag = DAG("streamed")
    text = dag.input("text")
    dag.output(summary=dag.llm("fast", "Summarise: {text}", text=text, stream=stream))
    return dag


def attempts(traces: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in trace_files(traces).parts:
        rows += [r for r in pq.read_table(path).to_pylist() if r["record_type"] == "attempt"]
    return rows


async def run_traced(cfg: Config, dag: DAG, traces: Path, **kwargs: object) -> object:
    engine = Engine(cfg, traces=traces)
    async with engine:
        return await engine.run(dag, {"text": TEXT}, **kwargs)  # type: ignore[arg-type]


def test_a_streamed_step_answers_as_the_whole_reply_would_and_traces_its_first_token(
    emulator: Emulator, tmp_path: Path
) -> None:
    cfg = config(emulator)
    plain = asyncio.run(run_traced(cfg, summary_dag(stream=False), tmp_path / "plain"))
    streamed = asyncio.run(run_traced(cfg, summary_dag(stream=True), tmp_path / "streamed"))
    assert streamed.outputs == plain.outputs  # type: ignore[attr-defined]
    # usage from the final event (stream_options.include_usage) is the provider's count
    assert streamed.usage == plain.usage  # type: ignore[attr-defined]
    assert streamed.cost_usd == plain.cost_usd > 0  # type: ignore[attr-defined]
    assert emulator.stats()["streams"] == 1
    (row,) = attempts(tmp_path / "streamed")
    assert row["streamed"] is True and row["status"] == "ok"
    assert 0 < row["time_to_first_token_ms"] < row["duration_ms"]  # type: ignore[operator]
    assert row["output_tokens_per_s"] > 0  # type: ignore[operator]
    (plain_row,) = attempts(tmp_path / "plain")
    assert plain_row["streamed"] is None and plain_row["time_to_first_token_ms"] is None


def test_a_cut_stream_is_retried_whole_and_what_arrived_is_discarded(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.faults(cut_streams=1)
    heard: list[TokenEvent] = []
    result = asyncio.run(
        run_traced(config(emulator), summary_dag(stream=True), tmp_path, on_token=heard.append)
    )
    summary = result.outputs["summary"]  # type: ignore[attr-defined]
    assert result.status == "ok"  # type: ignore[attr-defined]
    stats = emulator.stats()
    assert stats["streams"] == 2 and stats["streams_cut"] == 1
    first, second = sorted(attempts(tmp_path), key=lambda r: r["attempt"])  # type: ignore[arg-type, return-value]
    assert first["error_type"] == "StreamCut" and first["retryable"] is True
    assert "discarded" in str(first["error_message"])
    assert second["status"] == "ok" and second["streamed"] is True
    # the listener heard the cut attempt's pieces, word that they are void, then the rest
    discards = [i for i, e in enumerate(heard) if e.discard]
    assert len(discards) == 1 and heard[discards[0]].attempt == 1
    before, after = heard[: discards[0]], heard[discards[0] + 1 :]
    assert before and all(e.attempt == 1 for e in before)
    assert {e.attempt for e in after} == {2}
    assert "".join(e.text for e in after) == summary
    assert len("".join(e.text for e in before)) < len(summary)
    # the key is in no trace row, log line or error
    files = trace_files(tmp_path)
    for path in [*files.parts, *files.segments]:
        assert KEY.encode() not in path.read_bytes()
    assert KEY not in caplog.text
    assert KEY not in str(first["error_message"])


def test_a_models_stream_setting_streams_every_call_of_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    result = asyncio.run(
        run_traced(config(emulator, stream_model=True), summary_dag(stream=False), tmp_path)
    )
    assert result.status == "ok"  # type: ignore[attr-defined]
    assert emulator.stats()["streams"] == 1
    assert attempts(tmp_path)[0]["time_to_first_token_ms"] is not None


def test_a_stream_asked_of_a_provider_that_cannot_stream_is_refused() -> None:
    async def reply(request: object) -> ChatResponse:
        return ChatResponse("ok", Usage(1, 1))

    cfg = parse_config(
        {
            "providers": {"fn": {"kind": "sim"}},
            "models": {"fast": {"provider": "fn", "model": "m", "stream": True}},
        }
    )

    async def main() -> None:
        async with Engine(cfg, providers={"fn": FunctionProvider("fn", reply)}) as engine:  # type: ignore[arg-type]
            await engine.run(summary_dag(stream=False), {"text": "x"})

    with pytest.raises(ConfigError, match="cannot stream"):
        asyncio.run(main())


def test_a_reply_answered_from_the_cache_is_heard_as_one_piece(
    emulator: Emulator, tmp_path: Path
) -> None:
    heard: list[TokenEvent] = []

    async def twice() -> list[object]:
        async with Engine(config(emulator), cache=tmp_path / "cache") as engine:
            dag = summary_dag(stream=True)
            first = await engine.run(dag, {"text": TEXT})
            heard.clear()
            return [first, await engine.run(dag, {"text": TEXT}, on_token=heard.append)]

    first, second = asyncio.run(twice())
    assert emulator.stats()["streams"] == 1  # the second run made no call
    assert [e.text for e in heard] == [second.outputs["summary"]]  # type: ignore[attr-defined]
    assert second.outputs == first.outputs  # type: ignore[attr-defined]
