"""Every wire protocol (OpenAI, Anthropic, Azure OpenAI, Bedrock Converse, Gemini) against
the emulator on loopback: classify, an agent's two tool turns, structured output, limits
learned from headers, 429/529/overloaded classified, cached tokens priced, secrets kept.

Each test runs once per protocol, through the real client over aiohttp and the
emulator's own route for that protocol (``fanout.sim._protocols``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel
from support import Emulator, ListSink, start_emulator
from support_protocols import MODELS, PROTOCOLS, aws_env
from support_protocols import provider as shared_provider
from typer.testing import CliRunner

from fanout import DAG, Engine, NodeStatus, parse_config
from fanout.cli import app
from fanout.config import Config
from fanout.sim.server import EmulatorConfig

KEY = "sk-fanout-proto-0123456789-SECRET"
AWS_KEY_ID = "AKIAFANOUTTEST0EXAMPLE"
AWS_SECRET = "fanoutTestSecretAccessKey/0123456789SECRETaws"
SYSTEM = "You are a careful support assistant. " * 6  # 222 characters: cached
PIPELINE = Path(__file__).parent / "pipelines" / "everywhere.py"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    cfg = EmulatorConfig(api_key=KEY, requests_per_min=600, cache_min_tokens=20, seed=7)
    with start_emulator(cfg) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    emulator.reset()
    emulator.faults(overloaded_rate=0, throttle_rate=0)
    aws_env(monkeypatch, tmp_path, key_env="FANOUT_TEST_KEY", key=KEY,
            aws_key_id=AWS_KEY_ID, aws_secret=AWS_SECRET)  # fmt: skip


def provider(protocol: str, root: str, **extra: object) -> dict[str, object]:
    cache = {"cache_prompt": True} if protocol in ("anthropic", "bedrock") else {}
    return shared_provider(protocol, root, key_env="FANOUT_TEST_KEY", **cache, **extra)


def config(protocol: str, emulator: Emulator, **extra: object) -> Config:
    return parse_config(
        {
            "providers": {protocol: provider(protocol, emulator.root, **extra)},
            "models": {
                "m": {
                    "provider": protocol,
                    "model": MODELS[protocol],
                    "input_usd_per_mtok": 3.0,
                    "output_usd_per_mtok": 15.0,
                    "cached_input_usd_per_mtok": 0.3,
                    "cache_write_usd_per_mtok": 3.75,
                }
            },
        }
    )


class Verdict(BaseModel):
    label: str
    score: float


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_classify_job(protocol: str, emulator: Emulator) -> None:
    dag = DAG("classify")
    dag.input("text")
    dag.output(label=dag.llm("m", "Sentiment of: {text}", max_tokens=5))
    texts = ["great, I love it", "broken and late", "it is a chair"] * 2
    async with Engine(config(protocol, emulator)) as engine:
        results = [await engine.run(dag, {"text": t}) for t in texts]

    assert [r.outputs["label"] for r in results] == ["positive", "negative", "neutral"] * 2
    assert all(r.usage.input_tokens > 0 and r.usage.output_tokens > 0 for r in results)
    assert emulator.stats()["accepted"] == 6


def _agent(output: type[BaseModel] | None = None) -> tuple[DAG, list[int]]:
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
                       output=output, max_steps=4, name="agent")
    )  # fmt: skip
    return dag, seen


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_agent_calls_its_tool_over_two_turns(protocol: str, emulator: Emulator) -> None:
    dag, seen = _agent()
    async with Engine(config(protocol, emulator)) as engine:
        result = await engine.run(dag, {"text": "thanks"})

    assert result.status == "ok", result.error_message
    assert seen == [1, 2]  # turn one called lookup(1), turn two lookup(2) with its result
    assert result.nodes["agent"].calls == 3
    assert str(result.outputs["answer"]).startswith("Based on lookup: order 1 shipped")
    transcript = result.nodes["agent"].transcript or []
    assert [m["role"] for m in transcript].count("tool") == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_structured_output_alone_and_after_tools(protocol: str, emulator: Emulator) -> None:
    dag = DAG("verdict")
    dag.input("text")
    dag.output(verdict=dag.llm("m", "Judge: {text}", output=Verdict))
    agent, seen = _agent(output=Verdict)
    async with Engine(config(protocol, emulator)) as engine:
        alone = await engine.run(dag, {"text": "fine"})
        after = await engine.run(agent, {"text": "thanks"})

    assert isinstance(alone.outputs["verdict"], Verdict)
    assert after.status == "ok", after.error_message
    assert isinstance(after.outputs["answer"], Verdict)  # the output tool, called last
    assert seen == [1, 2]


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "azure"])
async def test_limits_are_learned_from_the_protocols_headers(
    protocol: str, emulator: Emulator
) -> None:
    dag = DAG("one")
    dag.input("text")
    dag.output(x=dag.llm("m", "Sentiment of: {text}", max_tokens=5, name="x"))
    async with Engine(config(protocol, emulator)) as engine:
        assert engine.limiter_states() == [] or engine.limiter_states()[0].requests_per_min is None
        for n in range(3):
            await engine.run(dag, {"text": f"review {n}"})
        (state,) = engine.limiter_states()

    assert state.requests_per_min == pytest.approx(594.0)  # 99% of the stated 600/min


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_throttle_is_rate_limited_and_paces_the_queue(
    protocol: str, emulator: Emulator
) -> None:
    emulator.faults(throttle_rate=1.0)
    sink = ListSink()
    dag = DAG("one")
    dag.input("text")
    dag.output(x=dag.llm("m", "Sentiment of: {text}", max_tokens=5, name="x"))
    cfg = config(protocol, emulator, retry={"max_attempts": 1})
    async with Engine(cfg, traces=sink) as engine:
        result = await engine.run(dag, {"text": "x"})
        (state,) = engine.limiter_states()

    assert result.nodes["x"].error_type == "RateLimited"
    (attempt,) = [s for s in sink.spans if s.record_type == "attempt"]
    assert (attempt.error_type, attempt.http_status) == ("RateLimited", 429)
    assert state.rate_limited == 1  # a real rate-limit signal for the limiter


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_overloaded_is_retried_and_is_no_rate_limit(
    protocol: str, emulator: Emulator
) -> None:
    emulator.faults(overloaded_rate=1.0)
    sink = ListSink()
    dag = DAG("one")
    dag.input("text")
    dag.output(x=dag.llm("m", "Sentiment of: {text}", max_tokens=5, name="x"))
    cfg = config(protocol, emulator, retry={"max_attempts": 3, "initial_backoff_s": 0.01})
    async with Engine(cfg, traces=sink) as engine:
        failed = await engine.run(dag, {"text": "x"})
        emulator.faults(overloaded_rate=0.0)
        recovered = await engine.run(dag, {"text": "y"})
        (state,) = engine.limiter_states()

    attempts = [s for s in sink.spans if s.record_type == "attempt"]
    refused = [s for s in attempts if s.error_type is not None]
    assert len(refused) == 3  # every attempt was tried: overloaded is retryable
    assert {(s.error_type, s.http_status, s.retryable) for s in refused} == {
        ("ProviderHTTPError", 529 if protocol == "anthropic" else 503, True)
    }
    assert failed.status != "ok" and recovered.outputs["x"] == "neutral"
    assert state.rate_limited == 0  # and never slowed the limiter
    assert emulator.stats()["overloaded"] == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_cached_tokens_are_read_and_priced(protocol: str, emulator: Emulator) -> None:
    sink = ListSink()
    dag = DAG("cached")
    dag.input("text")
    dag.output(x=dag.llm("m", "Sentiment of: {text}", system=SYSTEM, max_tokens=5))
    cfg = config(protocol, emulator)
    model = cfg.models["m"]
    async with Engine(cfg, traces=sink) as engine:
        first = await engine.run(dag, {"text": "great"}, budget_usd=1.0)
        second = await engine.run(dag, {"text": "awful"}, budget_usd=1.0)

    system_tokens = 3 + -(-len(SYSTEM) // 4)  # the emulator's count of the system message
    explicit = protocol in ("anthropic", "bedrock")  # these report the write
    assert first.usage.cached_input_tokens == 0
    assert first.usage.cache_write_tokens == (system_tokens if explicit else 0)
    assert second.usage.cached_input_tokens == system_tokens
    assert second.usage.input_tokens > system_tokens  # the total, cached ones included
    for result in (first, second):
        u = result.usage
        fresh = u.input_tokens - u.cached_input_tokens - u.cache_write_tokens
        expected = (fresh * 3.0 + u.cached_input_tokens * 0.3 + u.cache_write_tokens * 3.75
                    + u.output_tokens * 15.0) / 1e6  # fmt: skip
        assert result.cost_usd == pytest.approx(expected, rel=1e-12)
    full_price = model.cost_usd(second.usage.input_tokens, second.usage.output_tokens)
    assert second.cost_usd < full_price  # the cached tokens cost a tenth
    rows = [s for s in sink.spans if s.record_type == "attempt"]
    assert [(r.cached_input_tokens, r.cache_write_tokens) for r in rows] == [
        (0, system_tokens) if explicit else (None, None),
        (system_tokens, 0),
    ]
    assert sum(r.cost_usd or 0 for r in rows) == pytest.approx(first.cost_usd + second.cost_usd)
    # the request's budget settled each call at the same exact price
    assert [r.budget_spent_usd for r in rows] == pytest.approx([first.cost_usd, second.cost_usd])


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "azure", "gemini"])
async def test_a_rejected_key_is_in_no_error_log_or_trace(
    protocol: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    wrong = "sk-wrong-key-9876543210-SECRET"
    monkeypatch.setenv("FANOUT_TEST_KEY", wrong)
    sink = ListSink()
    dag = DAG("one")
    dag.input("text")
    dag.output(x=dag.llm("m", "Sentiment of: {text}", max_tokens=5, name="x"))
    caplog.set_level(logging.DEBUG)
    async with Engine(config(protocol, emulator), traces=sink) as engine:
        result = await engine.run(dag, {"text": "x"})
        shown = repr(engine.providers[protocol])

    assert result.nodes["x"].status == NodeStatus.ERROR
    assert "401" in (result.nodes["x"].error_message or "")  # the emulator echoed the key
    everything = [shown, caplog.text, str(result), *(repr(s) for s in sink.spans)]
    assert not [text for text in everything if wrong in text or "9876543210" in text]


async def test_aws_credentials_are_in_no_error_log_or_trace(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.faults(throttle_rate=1.0)
    sink = ListSink()
    dag = DAG("one")
    dag.input("text")
    dag.output(x=dag.llm("m", "Sentiment of: {text}", max_tokens=5, name="x"))
    caplog.set_level(logging.DEBUG)
    async with Engine(config("bedrock", emulator), traces=sink) as engine:
        result = await engine.run(dag, {"text": "x"})
        shown = repr(engine.providers["bedrock"])

    assert result.nodes["x"].error_type == "RateLimited"
    everything = [shown, caplog.text, str(result), *(repr(s) for s in sink.spans)]
    assert not [text for text in everything if AWS_SECRET in text]


def test_a_bad_sigv4_header_is_refused(emulator: Emulator) -> None:
    import httpx

    url = f"{emulator.root}/model/{MODELS['bedrock']}/converse"
    body = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    missing = httpx.post(url, json=body)
    forged = httpx.post(url, json=body, headers={"authorization": "AWS4-HMAC-SHA256 nope"})

    assert (missing.status_code, forged.status_code) == (403, 403)
    assert missing.headers["x-amzn-errortype"].startswith("UnrecognizedClientException")
    assert "SigV4" in forged.json()["message"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_same_pipeline_file_runs_on_every_protocol(
    protocol: str, emulator: Emulator, tmp_path: Path
) -> None:
    """Only the config's ``fast`` alias changes; the pipeline file is the same."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "great, thanks"}\n{"id": "b", "text": "awful"}\n')
    table = provider(protocol, emulator.root)
    lines = [f"[providers.{protocol}]"]
    lines += [f"{k} = {_toml(v)}" for k, v in table.items() if not isinstance(v, dict)]
    lines += ["", "[models.fast]", f'provider = "{protocol}"', f'model = "{MODELS[protocol]}"']
    (tmp_path / "fanout.toml").write_text("\n".join(lines) + "\n")
    args = ["run", f"{PIPELINE}:dag", "-i", str(source), "-o", str(tmp_path / "out"),
            "-c", str(tmp_path / "fanout.toml"), "--key", "id", "--no-traces"]  # fmt: skip

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "out" / "results").to_pylist()}
    assert (rows["a"]["output_label"], rows["b"]["output_label"]) == ("positive", "negative")
    assert all(str(r["output_answer"]).startswith("Based on lookup") for r in rows.values())
    assert all("priority" in str(r["output_triage"]) for r in rows.values())


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


async def test_a_header_from_the_environment_authenticates_and_stays_secret(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Azure's key given as ``headers = {"api-key" = {env = "VAR"}}``: sent, and scrubbed
    from the 401 that echoes a wrong one."""
    dag = DAG("one")
    dag.input("text")
    dag.output(x=dag.llm("m", "Sentiment of: {text}", max_tokens=5, name="x"))
    extra = {"api_key_env": None, "headers": {"api-key": {"env": "GATEWAY_KEY"}}}
    monkeypatch.setenv("GATEWAY_KEY", KEY)
    async with Engine(config("azure", emulator, **extra)) as engine:
        ok = await engine.run(dag, {"text": "great"})
    wrong = "gw-wrong-5555555555-SECRET"
    monkeypatch.setenv("GATEWAY_KEY", wrong)
    sink = ListSink()
    caplog.set_level(logging.DEBUG)
    async with Engine(config("azure", emulator, **extra), traces=sink) as engine:
        refused = await engine.run(dag, {"text": "great"})

    assert ok.outputs["x"] == "positive"
    assert "401" in (refused.nodes["x"].error_message or "")
    everything = [caplog.text, str(refused), *(repr(s) for s in sink.spans)]
    assert not [text for text in everything if wrong in text]
