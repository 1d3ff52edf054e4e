"""One shard of a job as a worker runs it (without Ray): its rows, a re-run, unreachable paths."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import sim_config, write_records

from fanout import DAG, ConfigError, Engine
from fanout.batch import MANIFEST_FILE, KeySet, fingerprint, open_job
from fanout.batch._readers import iter_shard, plan_shards
from fanout.batch._runner import JobStats
from fanout.batch._shards import ShardOptions, _probe_payload, _Task, _unseen, run_shard


def classify() -> DAG:
    dag = DAG("classify")
    dag.input("text")
    dag.output(label=dag.llm("fast", "Rate the sentiment of: {text}", max_tokens=5, name="rate"))
    return dag


def options(output: Path) -> ShardOptions:
    return ShardOptions(
        output_dir=str(output),
        key="id",
        metadata={},
        part_rows=10,
        part_interval_s=60.0,
        max_in_flight=8,
        budget_usd=None,
        budget_tokens=None,
        deadline_s=None,
        resumed=False,
        progress_every_s=0.05,
    )


async def test_a_shard_writes_tagged_parts_and_a_second_run_of_it_skips_what_it_wrote(
    tmp_path: Path,
) -> None:
    source = write_records(tmp_path / "in.jsonl", 200, "great {i}")
    output = tmp_path / "out"
    config = sim_config(0.0)
    dag = classify()
    open_job(output, fingerprint(dag.validate(models=config.models.keys()), config, "id"))
    shards = plan_shards(source, pieces=4, min_bytes=100)
    task = _Task(shards[1], options(output))
    reports: list[object] = []
    async with Engine(config) as engine:
        done = KeySet(["r60"])  # the job had finished r60 before (the driver's shared set)
        first = await run_shard(engine, dag, task, done, reports.append)
        # run again (its worker died after publishing): every row it wrote is skipped
        again = await run_shard(engine, dag, task, done, reports.append)

    mine = [record.key for record in iter_shard(shards[1], key="id")]
    assert 30 < len(mine) < 70 and "r60" in mine  # about a quarter of the file
    parts = sorted((output / "results").glob("*.parquet"))
    assert parts and all(p.name.endswith("-s00001.parquet") for p in parts)
    keys = pq.read_table(output / "results", columns=["key"]).column("key").to_pylist()
    assert sorted(keys) == sorted(k for k in mine if k != "r60")
    assert isinstance(first, JobStats) and (first.records, first.skipped) == (len(mine) - 1, 1)
    assert (again.records, again.skipped) == (0, len(mine))
    assert reports and all(isinstance(r, JobStats) for r in reports)


async def test_a_shard_refuses_input_or_output_its_node_cannot_see(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "t"}) + "\n", encoding="utf-8")
    (shard,) = plan_shards(source, pieces=1)
    async with Engine(sim_config(0.0)) as engine:
        with pytest.raises(ConfigError, match=rf"{MANIFEST_FILE} is missing.*--read-on-driver"):
            await run_shard(engine, classify(), _Task(shard, options(tmp_path / "elsewhere")),
                            KeySet(), lambda _: None)  # fmt: skip
        source.unlink()
        with pytest.raises(ConfigError, match=r"cannot be read on node.*--read-on-driver"):
            await run_shard(engine, classify(), _Task(shard, options(tmp_path)),
                            KeySet(), lambda _: None)  # fmt: skip


class _BlindWorkers:
    """A local engine posing as one with workers that cannot see the driver's files."""

    size = max_workers = 2

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.asked = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def limiter_states(self) -> list[object]:
        return list(self.engine.limiter_states())

    async def ask_workers(self, dag: DAG, job: object, payload: object) -> list[object]:
        self.asked += 1
        marker, files = payload  # type: ignore[misc]
        assert _unseen(marker, files) is None  # this process sees them all...
        return [None, "input file '/in.jsonl' cannot be read on node 'elsewhere'"]  # ...one not

    async def run_on_workers(self, *args: object, **kwargs: object) -> list[object]:
        raise AssertionError("no shard may run when a worker cannot see the files")


async def test_when_a_worker_cannot_see_the_files_the_driver_reads_instead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fanout.batch import run_file

    source = write_records(tmp_path / "in.jsonl", 30)
    async with Engine(sim_config(0.0)) as engine:
        blind = _BlindWorkers(engine)
        job = run_file(blind, classify(), source, tmp_path / "out", key="id")  # type: ignore[arg-type]
        stats = await job
        assert blind.asked == 1 and stats.ok == 30
        assert "reading the input on the driver" in caplog.text and "'elsewhere'" in caplog.text
        assert [p.name for p in (tmp_path / "out" / "results").iterdir()] == [
            "part-000000.parquet"  # the driver's own parts: no shard tag
        ]
        insist = run_file(blind, classify(), source, tmp_path / "o2", shard=True)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=r"workers cannot read shards.*'elsewhere'"):
            await insist
    assert not list((tmp_path / "out").glob(".fanout-probe-*"))  # the marker is gone


def test_what_a_worker_does_not_see(tmp_path: Path) -> None:
    marker = tmp_path / ".fanout-probe-x"
    data = write_records(tmp_path / "in.jsonl", 3)
    size = data.stat().st_size
    assert _unseen(str(marker), ((str(data), size),)) is not None  # no marker: not shared
    marker.write_bytes(b"")
    assert _unseen(str(marker), ((str(data), size),)) is None
    assert "is not the driver's" in str(_unseen(str(marker), ((str(data), size + 1),)))
    assert "cannot be read" in str(_unseen(str(marker), ((str(tmp_path / "gone"), 1),)))


def test_the_probe_names_files_by_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's working directory is not the driver's: relative paths would not do."""
    monkeypatch.chdir(tmp_path)
    write_records(tmp_path / "in.jsonl", 3)
    (tmp_path / "out").mkdir()
    marker, files = _probe_payload("in.jsonl", Path("out"))
    assert marker.is_absolute() and marker.parent == tmp_path / "out" and marker.is_file()
    assert files == ((str(tmp_path / "in.jsonl"), (tmp_path / "in.jsonl").stat().st_size),)
    monkeypatch.chdir("/")  # as a worker: still found
    assert _unseen(str(marker), files) is None
