"""``dag.embed`` on the Azure, Gemini and Bedrock (Titan, Cohere) protocols against the
emulator on loopback: a batch job's vectors written as ``fixed_size_list<float32>``
Parquet columns of the size asked, packed within each API's inputs a call, usage and
cost traced as the emulator counted, the secrets in no file; and an embed step on a
model without an embeddings API (Anthropic's) refused before any call."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import Emulator, ListSink, start_emulator
from support_protocols import SECRETS, aws_env, one_model

from fanout import DAG, Engine
from fanout.batch import result_parts, run_file
from fanout.errors import ConfigError
from fanout.sim.server import EmulatorConfig
from fanout.trace import trace_files

PRICE = 0.02  # USD per million input tokens
# protocol, model, the vector size asked, inputs one call may carry
CASES: dict[str, tuple[str, str, int | None, int]] = {
    "azure": ("azure", "text-embedding-3-small-prod", 32, 2048),
    "gemini": ("gemini", "gemini-embedding-001", 24, 100),
    "titan": ("bedrock", "amazon.titan-embed-text-v2:0", 256, 1),
    "cohere": ("bedrock", "cohere.embed-english-v3", None, 96),  # v3: one size, 1,024
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(api_key=SECRETS[0])) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _fresh(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    emulator.reset()
    aws_env(monkeypatch, tmp_path)


def embed_dag(dimensions: int | None = None) -> DAG:
    dag = DAG("embed_reviews")
    dag.output(vector=dag.embed("m", dag.input("text", str), dimensions=dimensions))
    return dag


def attempt_rows(traces: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in trace_files(traces).parts:
        rows += [r for r in pq.read_table(path).to_pylist() if r["record_type"] == "attempt"]
    return rows


@pytest.mark.parametrize("case", list(CASES))
def test_a_batch_job_writes_vectors_of_the_size_asked_with_usage_and_cost(
    case: str, emulator: Emulator, tmp_path: Path
) -> None:
    protocol, model, dims, per_call = CASES[case]
    records = 12
    source = tmp_path / "reviews.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"review {i} of the chair"}) + "\n"
                              for i in range(records)))  # fmt: skip
    cfg = one_model(protocol, emulator.root, model, input_usd_per_mtok=PRICE, embed_linger_ms=50)

    async def main() -> None:
        async with Engine(cfg, traces=tmp_path / "traces") as engine:
            stats = await run_file(engine, embed_dag(dims), source, tmp_path / "out", key="id")
            assert stats.ok == records

    asyncio.run(main())
    table = pa.concat_tables(pq.read_table(p) for p in result_parts(tmp_path / "out"))
    # a size the step names is a fixed_size_list; Cohere v3's own 1,024, a list
    expected = pa.list_(pa.float32(), dims) if dims else pa.list_(pa.float32())
    assert table.schema.field("output_vector").type == expected
    assert table.num_rows == records
    vectors = table.column("output_vector").to_pylist()
    assert {len(v) for v in vectors} == {dims or 1024}
    assert all(math.isclose(sum(x * x for x in v), 1, rel_tol=1e-4) for v in vectors)
    served = emulator.stats()
    assert served["embedding_inputs"] == records
    if per_call == 1:  # Titan: a call per text
        assert served["embedding_requests"] == records
    else:  # packed across records
        assert served["embedding_requests"] < records / 3
    rows = attempt_rows(tmp_path / "traces")
    assert len(rows) == records
    assert max(r["request_inputs"] for r in rows) == min(per_call, records)  # type: ignore[type-var]
    assert sum(r["input_tokens"] for r in rows) == served["tokens"]  # type: ignore[misc]
    cost = sum(r["cost_usd"] for r in rows)  # type: ignore[misc]
    assert math.isclose(cost, served["tokens"] * PRICE / 1e6)
    files = trace_files(tmp_path / "traces")
    for path in [*files.parts, *files.segments, *result_parts(tmp_path / "out")]:
        data = path.read_bytes()
        assert all(secret.encode() not in data for secret in SECRETS)


@pytest.mark.parametrize(("case", "calls"), [("gemini", 3), ("cohere", 3)])
async def test_a_long_list_is_split_at_the_apis_inputs_a_call(
    case: str, calls: int, emulator: Emulator
) -> None:
    protocol, model, _, per_call = CASES[case]
    texts = [f"text {i}" for i in range(2 * per_call + 10)]
    dag = DAG("many")
    dag.output(vectors=dag.embed("m", dag.input("texts")))
    async with Engine(one_model(protocol, emulator.root, model, embed_linger_ms=0)) as engine:
        result = await engine.run(dag, {"texts": texts})
    assert result.status == "ok", result.error_message
    assert len(result.outputs["vectors"]) == len(texts)  # type: ignore[arg-type]
    served = emulator.stats()
    assert served["embedding_requests"] == calls  # per_call, per_call, 10
    assert served["embedding_inputs"] == len(texts)


def test_an_embed_step_on_an_anthropic_model_is_refused_before_any_call(
    emulator: Emulator, tmp_path: Path
) -> None:
    cfg = one_model("anthropic", emulator.root, "claude-3-5-haiku-latest")
    source = tmp_path / "reviews.jsonl"
    source.write_text(json.dumps({"id": 1, "text": "a chair"}) + "\n")

    async def main() -> None:
        async with Engine(cfg) as engine:
            with pytest.raises(ConfigError) as refused:
                engine.validate(embed_dag())
            message = str(refused.value)
            assert "model 'm'" in message and "'claude-3-5-haiku-latest'" in message
            assert "no embeddings API" in message and "embedding-capable model" in message
            assert all(secret not in message for secret in SECRETS)
            with pytest.raises(ConfigError, match="no embeddings API"):
                await run_file(engine, embed_dag(), source, tmp_path / "out", key="id")

    asyncio.run(main())
    assert emulator.stats()["accepted"] == 0


def test_a_bedrock_model_with_no_embeddings_body_is_refused_before_any_call(
    emulator: Emulator,
) -> None:
    cfg = one_model("bedrock", emulator.root, "anthropic.claude-3-haiku-20240307-v1:0")
    engine = Engine(cfg)
    with pytest.raises(ConfigError, match=r"Amazon Titan .* or Cohere .* is neither"):
        engine.validate(embed_dag())
    assert emulator.stats()["accepted"] == 0


def test_the_ray_driver_refuses_it_too_before_any_worker_starts(emulator: Emulator) -> None:
    """``RayEngine.validate`` runs the same checks on the driver (no Ray session needed)."""
    pytest.importorskip("ray")
    from fanout.distributed import RayEngine

    engine = RayEngine(one_model("anthropic", emulator.root, "claude-3-5-haiku-latest"))
    with pytest.raises(ConfigError, match="no embeddings API"):
        engine.validate(embed_dag())
    assert emulator.stats()["accepted"] == 0


@pytest.mark.parametrize("case", ["azure", "gemini"])
async def test_a_rejected_key_is_in_no_embedding_error_log_or_trace(
    case: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "sk-fanout-wrong-0123456789-NOTME"  # the emulator echoes it in its 401
    monkeypatch.setenv("FANOUT_PARTS_KEY", wrong)
    protocol, model, dims, _ = CASES[case]
    sink = ListSink()
    caplog.set_level(logging.DEBUG)
    async with Engine(one_model(protocol, emulator.root, model), traces=sink) as engine:
        result = await engine.run(embed_dag(dims), {"text": "a chair"})
    assert result.status != "ok"
    node = result.nodes["embed"]
    assert node.error_type == "ProviderHTTPError" and "401" in node.error_message
    everything = [node.error_message, caplog.text, str(result), *(repr(s) for s in sink.spans)]
    assert all(wrong not in text for text in everything)
