"""Job fingerprints: what changes a node's spec, what does not; how a job directory opens."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from support import sim_config

from fanout import DAG, ConfigError
from fanout.batch import MANIFEST_FILE, ResultWriter, fingerprint, open_job
from fanout.config import Config, parse_config


def shout(text: str) -> str:
    return text.upper()


def make_dag(prompt: str = "Rate: {text}", tool: object = shout) -> DAG:
    dag = DAG("fp")
    text = dag.input("text")
    loud = dag.tool(tool, text, name="loud")  # type: ignore[arg-type]
    dag.output(label=dag.llm("fast", prompt, name="label", text=loud))
    return dag


def nodes(dag: DAG, config: Config | None = None, key: str | None = None) -> dict[str, object]:
    cfg = config or sim_config()
    result = fingerprint(dag.validate(models=cfg.models.keys()), cfg, key)["nodes"]
    assert isinstance(result, dict)
    return result


def test_a_node_changes_with_its_prompt_model_or_function_and_nothing_else() -> None:
    base = nodes(make_dag())
    assert nodes(make_dag()) == base  # stable across builds of the same DAG
    assert nodes(make_dag(), sim_config(250.0, jitter=0.3)) == base  # latency: no change

    changed = nodes(make_dag("Rate this: {text}"))
    assert [n for n in base if base[n] != changed[n]] == ["label"]

    def whisper(text: str) -> str:
        return text.lower()

    changed = nodes(make_dag(tool=whisper))
    assert [n for n in base if base[n] != changed[n]] == ["loud"]

    other = sim_config().model_dump()
    other["models"]["fast"]["model"] = "sim-xl"
    other["models"]["fast"]["input_usd_per_mtok"] = 9.0
    changed = nodes(make_dag(), parse_config(other))
    assert [n for n in base if base[n] != changed[n]] == ["label"]
    prices_only = sim_config().model_dump()
    prices_only["models"]["fast"]["input_usd_per_mtok"] = 9.0
    assert nodes(make_dag(), parse_config(prices_only)) == base


def test_opening_a_job_directory(tmp_path: Path) -> None:
    cfg = sim_config()
    plan = make_dag().validate(models=cfg.models.keys())
    first = fingerprint(plan, cfg, "id")
    assert not open_job(tmp_path, first).resumed  # new
    assert (tmp_path / MANIFEST_FILE).exists()

    changed = fingerprint(make_dag("Other: {text}").validate(models=cfg.models), cfg, "id")
    # no row written yet: a changed job simply starts again
    assert not open_job(tmp_path, changed).resumed
    writer = ResultWriter(tmp_path, {"label": pa.string()})
    writer.write_error("k1", "InvalidRecord", "bad")
    writer.close()

    again = open_job(tmp_path, changed, resume=True)
    assert again.resumed and "k1" in again.done and len(again.done) == 1
    with pytest.raises(ConfigError, match="nodes changed since: label"):
        open_job(tmp_path, first)
    moved = open_job(tmp_path, first, force_rerun_changed=True)
    assert not moved.resumed and moved.superseded is not None
    assert (moved.superseded / "results").is_dir() and not (tmp_path / "results").exists()

    stray = tmp_path / "stray"
    ResultWriter(stray, {}).close()
    writer = ResultWriter(stray, {})
    writer.write_error("k", "E", "m")
    writer.close()
    with pytest.raises(ConfigError, match=r"no _fanout_job\.json"):
        open_job(stray, first)
