"""``dag.embed`` against the emulator's ``/v1/embeddings`` on loopback: vectors written as
``fixed_size_list<float32>`` Parquet columns, texts of many records packed into few
requests (split at the request limits and the tokens/min bucket), usage and cost traced
exactly, the key absent from every row."""

from __future__ import annotations

import asyncio
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import Emulator, start_emulator

from fanout import DAG, Engine, parse_config
from fanout.batch import result_parts, run_file
from fanout.config import Config
from fanout.sim.server import EmulatorConfig
from fanout.trace import trace_files
from fanout.trace._otlp import export_otlp

KEY = "sk-fanout-embed-0123456789-SECRET"
PRICE = 0.02  # USD per million input tokens
DIMS = 16


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(api_key=KEY, latency_ms=5)) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _fresh(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.reset()
    monkeypatch.setenv("FANOUT_EMBED_KEY", KEY)


def config(emulator: Emulator, **model: object) -> Config:
    provider: dict[str, object] = {
        "kind": "openai",
        "base_url": emulator.base_url,
        "api_key_env": "FANOUT_EMBED_KEY",
        "adaptive": False,
    }
    if "tokens_per_min" in model:
        provider["tokens_per_min"] = model.pop("tokens_per_min")
    spec = {"provider": "emu", "model": "embed-small", "input_usd_per_mtok": PRICE, **model}
    return parse_config({"providers": {"emu": provider}, "models": {"embedder": spec}})


def embed_dag() -> DAG:
    dag = DAG("embed_reviews")
    text = dag.input("text", str)
    dag.output(vector=dag.embed("embedder", text))
    return dag


def attempt_rows(traces: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in trace_files(traces).parts:
        rows += [r for r in pq.read_table(path).to_pylist() if r["record_type"] == "attempt"]
    return rows


def test_a_batch_job_writes_vectors_as_fixed_size_lists_packing_records_into_requests(
    emulator: Emulator, tmp_path: Path
) -> None:
    records = 40
    source = tmp_path / "reviews.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": i, "text": f"review number {i} of the chair"}) + "\n"
            for i in range(records)
        )
    )
    cfg = config(emulator, dimensions=DIMS, embed_linger_ms=50)

    async def main() -> None:
        async with Engine(cfg, traces=tmp_path / "traces") as engine:
            stats = await run_file(engine, embed_dag(), source, tmp_path / "out", key="id")
            assert stats.ok == records

    asyncio.run(main())
    table = pa.concat_tables(pq.read_table(p) for p in result_parts(tmp_path / "out"))
    column = table.schema.field("output_vector")
    assert column.type == pa.list_(pa.float32(), DIMS)  # fixed_size_list<float32>[16]
    assert table.num_rows == records
    vectors = table.column("output_vector").to_pylist()
    assert all(len(v) == DIMS and math.isclose(sum(x * x for x in v), 1, rel_tol=1e-5)
               for v in vectors)  # fmt: skip
    served = emulator.stats()
    assert served["embedding_inputs"] == records
    assert served["embedding_requests"] < records / 4  # packed across records
    rows = attempt_rows(tmp_path / "traces")
    assert len(rows) == records  # one row per step per request that carried it
    assert all(r["span_name"] == "embeddings embed-small" for r in rows)
    assert max(r["request_inputs"] for r in rows) > 1  # type: ignore[type-var]
    assert sum(r["input_tokens"] for r in rows) == served["tokens"]  # type: ignore[misc]
    cost = sum(r["cost_usd"] for r in rows)  # type: ignore[misc]
    assert math.isclose(cost, served["tokens"] * PRICE / 1e6)
    assert math.isclose(sum(table.column("cost_usd").to_pylist()), cost)
    files = trace_files(tmp_path / "traces")
    for path in [*files.parts, *files.segments, *result_parts(tmp_path / "out")]:
        assert KEY.encode() not in path.read_bytes()
    exported = io.StringIO()
    export_otlp(tmp_path / "traces", exported)
    operations = [
        a["value"].get("stringValue")
        for line in exported.getvalue().splitlines()
        for resource in json.loads(line)["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
        for a in span["attributes"]
        if a["key"] == "gen_ai.operation.name"
    ]
    assert operations.count("embeddings") == records


def test_a_list_longer_than_a_request_is_split_and_vectors_come_back_in_order(
    emulator: Emulator,
) -> None:
    texts = [f"text {i}" for i in range(20)]
    dag = DAG("many")
    vectors = dag.embed("embedder", dag.input("texts"))
    dag.output(vectors=vectors, again=dag.embed("embedder", "text 3"))

    async def main() -> dict[str, object]:
        async with Engine(config(emulator, embed_max_inputs=8, embed_linger_ms=50)) as engine:
            result = await engine.run(dag, {"texts": texts})
            assert result.status == "ok", result.error_message
            return result.outputs

    outputs = asyncio.run(main())
    vectors = outputs["vectors"]
    assert isinstance(vectors, list) and len(vectors) == len(texts)
    assert vectors[3] == outputs["again"]  # same text, same vector: order kept
    assert vectors[2] != vectors[3]
    served = emulator.stats()
    assert served["embedding_inputs"] == 21
    assert served["embedding_requests"] == 3  # 8 + 8 + (4 and the other step's 1)


def test_the_tokens_per_minute_bucket_caps_what_one_request_carries(
    emulator: Emulator,
) -> None:
    texts = ["x" * 40] * 20  # 10 tokens each, 200 in all
    dag = DAG("bucketed")
    dag.output(vectors=dag.embed("embedder", dag.input("texts")))
    # 6,000 tokens/min: a bucket of 99 tokens (the limiter keeps 1% in hand, over 1 s)
    cfg = config(emulator, tokens_per_min=6000, embed_linger_ms=0)

    async def main() -> None:
        async with Engine(cfg) as engine:
            result = await engine.run(dag, {"texts": texts})
            assert result.status == "ok", result.error_message

    asyncio.run(main())
    served = emulator.stats()
    assert served["embedding_inputs"] == 20
    assert served["embedding_requests"] == 3  # 9 texts (90 tokens) a request at most
