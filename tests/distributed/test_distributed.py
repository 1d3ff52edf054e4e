"""The Ray backend on a real two-node cluster: placement, CPU tools, dead actors, leases."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray
from support import emulator_process, sim_config, start_emulator, write_records

from fanout import DAG, Tool, parse_config
from fanout.distributed import RayEngine
from fanout.guards import Repair
from fanout.sim.server import EmulatorConfig
from fanout.trace import trace_files

pytestmark = pytest.mark.usefixtures("ray_cluster")


def where_am_i(_: str) -> dict[str, object]:
    """A CPU-bound tool that reports the process and node it ran in."""
    return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}


def classify() -> DAG:
    dag = DAG("classify")
    dag.input("text")
    dag.output(label=dag.llm("fast", "Rate the sentiment of: {text}", max_tokens=5, name="rate"))
    return dag


async def test_work_spreads_over_nodes_and_cpu_tools_run_as_ray_tasks(tmp_path: Any) -> None:
    dag = DAG("spread")
    text = dag.input("text")
    dag.output(
        where=dag.tool(where_am_i, text, name="where", cpu=True, num_cpus=1),
        label=dag.llm("fast", "Rate {text}", name="rate"),
    )
    async with RayEngine(sim_config(2.0), workers=2, traces=tmp_path / "traces") as engine:
        results = await asyncio.gather(
            *(engine.run(dag, {"text": f"t{i}"}, record_key=str(i)) for i in range(60))
        )
        info = await engine.worker_info()
    assert all(r.ok for r in results), [r.error_message for r in results if not r.ok][:3]
    worker_nodes = {w["node_id"] for w in info}
    assert len(worker_nodes) == 2  # one worker actor on each node
    assert all(int(str(w["completed"])) > 0 for w in info)  # both did work
    worker_pids = {w["pid"] for w in info}
    tool_pids = {r.outputs["where"]["pid"] for r in results}  # type: ignore[index]
    assert tool_pids.isdisjoint(worker_pids | {os.getpid()})  # a Ray task, not the actor
    # each worker wrote its own trace files into the one dataset
    parts = trace_files(tmp_path / "traces").parts
    assert len({p.name.split("-")[1] for p in parts}) == 2
    runs = sum(
        pq.read_table(p, columns=["record_type"]).column(0).to_pylist().count("run")
        for p in parts
    )
    assert runs == 60


def pid_of(n: int) -> str:
    """A CPU-bound agent tool: the process it ran in."""
    return json.dumps({"pid": os.getpid(), "n": n})


async def test_an_agents_cpu_tool_runs_as_a_ray_task() -> None:
    dag = DAG("agent_cpu")
    dag.input("q")
    dag.output(
        answer=dag.llm(
            "fast",
            "{script} {q}",
            script='[sim:tools=pid_of({"n": 1});pid_of({"n": 2})]',
            tools=[Tool.from_function(pid_of, cpu=True, num_cpus=1)],
            name="agent",
        )
    )
    async with RayEngine(sim_config(1.0), workers=2) as engine:
        results = await asyncio.gather(*(engine.run(dag, {"q": f"q{i}"}) for i in range(4)))
        info = await engine.worker_info()
    assert all(r.ok for r in results), [r.error_message for r in results if not r.ok][:3]
    outputs = [
        json.loads(str(m["content"]))
        for r in results
        for m in r.nodes["agent"].transcript or []
        if m["role"] == "tool"
    ]
    assert sorted(o["n"] for o in outputs) == [1, 1, 1, 1, 2, 2, 2, 2]
    tool_pids = {o["pid"] for o in outputs}
    assert tool_pids.isdisjoint({w["pid"] for w in info} | {os.getpid()})  # Ray tasks


async def _busy_worker(engine: RayEngine) -> Any:
    """The worker holding the most requests, once one holds any (a worker that has just
    returned all its batches would die with nothing to lose)."""
    for _ in range(500):
        handle, held = engine.worker_load()[0]
        if held:
            return handle
        await asyncio.sleep(0.01)
    raise AssertionError("no worker held a request for 5 s")


async def test_a_killed_worker_loses_no_record_and_repeats_none_that_came_back() -> None:
    dag = classify()
    engine = RayEngine(sim_config(150.0), workers=2, batch_size=10, batches_per_worker=2)
    async with engine:
        # both actors up first: calls sent to an actor still being created are queued by
        # Ray and delivered after its restart, so killing it then loses nothing to re-send
        await engine.worker_info()
        tasks = [
            asyncio.ensure_future(engine.run(dag, {"text": f"r{i}"}, record_key=str(i)))
            for i in range(120)
        ]
        twenty_back = asyncio.Event()
        for task in tasks:
            task.add_done_callback(
                lambda _: twenty_back.set() if sum(t.done() for t in tasks) >= 20 else None
            )
        await twenty_back.wait()
        victim = await _busy_worker(engine)
        returned_before = {i for i, t in enumerate(tasks) if t.done()}
        ray.kill(victim, no_restart=False)  # Ray restarts it; its batches are lost
        results = await asyncio.gather(*tasks)
        stats = engine.stats
    assert all(r.ok for r in results)
    assert len(results) == 120 and len({r.trace_id or r.request_id for r in results}) == 120
    assert stats.lost_batches >= 1 and stats.resent >= 1
    # nothing whose result had come back was sent again: the re-sends are all others
    assert stats.requests == 120 + stats.resent
    assert stats.resent <= 120 - len(returned_before)


async def test_a_killed_coordinator_loses_nothing() -> None:
    dag = classify()
    async with RayEngine(sim_config(50.0), workers=2, batch_size=8) as engine:
        tasks = [asyncio.ensure_future(engine.run(dag, {"text": f"a{i}"})) for i in range(120)]
        twenty_back = asyncio.Event()
        for task in tasks:
            task.add_done_callback(
                lambda _: twenty_back.set() if sum(t.done() for t in tasks) >= 20 else None
            )
        await twenty_back.wait()
        for coordinator in engine.coordinators.values():
            ray.kill(coordinator, no_restart=False)  # mid-batch: workers keep their leases
        results = await asyncio.gather(*tasks)
        state = ray.get(next(iter(engine.coordinators.values())).state.remote())
        info = await engine.worker_info()
    assert all(r.ok for r in results) and len(results) == 120
    assert state["name"]  # restarted, and answering again
    assert all(w["leases"] for w in info)


async def test_four_workers_share_one_limit_without_a_429_storm() -> None:
    rpm = 2400.0  # 40 requests/s across the whole cluster
    with emulator_process("--rpm", str(rpm), "--latency-ms", "20") as emulator:
        config = parse_config(
            {
                "providers": {
                    "emu": {
                        "kind": "openai",
                        "base_url": emulator.base_url,
                        "requests_per_min": rpm,
                    }
                },
                "models": {"fast": {"provider": "emu", "model": "sim-small"}},
            }
        )
        async with RayEngine(config, workers=4, batch_size=8) as engine:
            results = await asyncio.gather(
                *(engine.run(classify(), {"text": f"great {i}"}) for i in range(300))
            )
            info = await engine.worker_info()
        stats = emulator.stats()
    assert all(r.ok for r in results), [r.error_message for r in results if not r.ok][:3]
    assert stats["accepted"] == 300
    assert stats["limited"] <= 0.01 * stats["accepted"], stats  # 4 workers never multiply it
    leased = [w["leases"]["emu/sim-small"][0] for w in info]  # type: ignore[index]
    assert all(share is not None and share < rpm for share in leased)  # each a share only


async def test_no_completed_call_is_made_again_after_workers_die(tmp_path: Any) -> None:
    with start_emulator(EmulatorConfig(latency_ms=100.0)) as emulator:
        config = parse_config(
            {
                "providers": {"emu": {"kind": "openai", "base_url": emulator.base_url}},
                "models": {"fast": {"provider": "emu", "model": "sim-small"}},
            }
        )
        dag = classify()
        texts = [f"great {i}" for i in range(60)]
        engine = RayEngine(config, workers=2, batch_size=8, journal=tmp_path / "calls")
        async with engine:
            first = await asyncio.gather(*(engine.run(dag, {"text": t}) for t in texts[:40]))
            assert emulator.stats()["accepted"] == 40
            for handle in engine.worker_handles():
                ray.kill(handle, no_restart=False)  # both restart, with nothing in memory
            tasks = [asyncio.ensure_future(engine.run(dag, {"text": t})) for t in texts]
            twenty_back = asyncio.Event()
            for task in tasks:
                task.add_done_callback(
                    lambda _: twenty_back.set() if sum(t.done() for t in tasks) >= 20 else None
                )
            await twenty_back.wait()
            ray.kill(await _busy_worker(engine), no_restart=False)  # and one dies mid-batch
            second = await asyncio.gather(*tasks)
            info = await engine.worker_info()
        accepted = emulator.stats()["accepted"]
    assert all(r.ok for r in first + second)
    assert [r.outputs for r in second[:40]] == [r.outputs for r in first]
    # the 40 calls made before the workers died were answered from the journal; each of
    # the 20 new ones was made once, or twice only if it was in flight when its worker died
    assert 60 <= accepted <= 60 + engine.stats.resent
    assert sum(int(str(w["replayed"])) for w in info) >= 1


async def test_a_job_budget_holds_cluster_wide() -> None:
    dag = DAG("capped")
    dag.input("text")
    # max_tokens near the reply's size: a call's worst case (what is reserved) is close
    # to its real cost, so the cap can be used to the end
    dag.output(a=dag.llm("smart", "Summarise {text}", name="a", max_tokens=5))
    cap = 0.01  # about 55 runs of this DAG; 120 are submitted
    async with RayEngine(sim_config(5.0), workers=2, batch_size=8, job_budget_usd=cap) as engine:
        results = await asyncio.gather(
            *(engine.run(dag, {"text": f"review {i}"}) for i in range(120))
        )
        assert engine.budget_coordinator is not None
        await asyncio.sleep(1.0)  # workers report what they spent five times a second
        spent_usd, _ = await engine.budget_coordinator.spent.remote()
    ok = [r for r in results if r.ok]
    assert 0 < len(ok) < 120
    assert {str(r.status) for r in results if not r.ok} == {"budget_exceeded"}
    total = sum(r.cost_usd for r in results)
    assert total <= cap + 1e-9  # two workers' allowances never add up to more than the cap
    assert total >= 0.8 * cap  # and the cap is used, not left idle in allowances
    assert spent_usd == pytest.approx(total)


async def test_the_pool_grows_with_the_queue_and_shrinks_when_idle() -> None:
    dag = classify()
    engine = RayEngine(
        sim_config(200.0),
        workers=1,
        max_workers=3,
        batch_size=4,
        batches_per_worker=1,
        scale_up_every_s=0.3,
        scale_down_idle_s=1.0,
    )
    async with engine:
        results = await asyncio.gather(*(engine.run(dag, {"text": f"q{i}"}) for i in range(80)))
        grown = len(engine.worker_handles())
        # a worker idle early in the run may be retired and another added later: count both
        up, down = engine.stats.scaled_up, engine.stats.scaled_down
        served = dict(engine.stats.per_worker)
        for _ in range(100):  # idle now: back to the minimum within a few seconds
            if len(engine.worker_handles()) == 1:
                break
            await asyncio.sleep(0.1)
        shrunk = len(engine.worker_handles())
    assert all(r.ok for r in results)
    assert grown > 1 and up - down == grown - 1
    assert len(served) >= grown  # the new workers took work (and any retired one had)
    assert shrunk == 1 and engine.stats.scaled_down == engine.stats.scaled_up


async def test_a_sharded_job_grows_the_pool_while_shards_wait(tmp_path: Any) -> None:
    from fanout.batch import run_file

    source = write_records(tmp_path / "in.jsonl", 400, "[sim:latency=50] great {i}")
    out = tmp_path / "out"
    engine = RayEngine(
        sim_config(0.0), workers=1, max_workers=3, scale_up_every_s=0.3, journal=out / "calls"
    )
    async with engine:
        stats = await run_file(
            engine, classify(), source, out, key="id", max_in_flight=8, shard_min_bytes=1000
        )
        info = await engine.worker_info()
    assert stats.ok == 400
    assert engine.stats.scaled_up == len(info) - 1 >= 1  # it grew
    assert sum(int(str(w["jobs_run"])) > 0 for w in info) == len(info)  # and they all worked


def many(n: int) -> list[str]:
    return [f"item {i}" for i in range(n)]


def capitalised(answer: object) -> Repair:
    return Repair(str(answer).capitalize())


async def test_one_request_spreads_a_large_map_over_the_pool(tmp_path: Any) -> None:
    dag = DAG("wide")
    n = dag.input("n")
    items = dag.tool(many, n, name="items")
    rate = dag.llm("fast", "Rate {item}", max_tokens=10, guards=[capitalised])
    dag.output(rated=dag.map(rate, over=items, name="m"))
    engine = RayEngine(
        sim_config(20.0), workers=2, spread_map_items=64, traces=tmp_path / "traces"
    )
    async with engine:
        result = await engine.run(dag, {"n": 300}, record_key="wide-1")
        info = await engine.worker_info()
    assert result.ok, result.error_message
    rated = result.outputs["rated"]
    assert isinstance(rated, list) and len(rated) == 300
    assert rated[7] == "Sim reply: rate item 7"  # in order, repaired by the guard
    assert result.nodes["m"].calls == 300 and result.usage.input_tokens > 0
    assert result.nodes["m"].guard_repairs == 300  # counted on whichever worker ran them
    assert all(int(str(w["items_run"])) > 0 for w in info)  # both workers ran items
    parts = trace_files(tmp_path / "traces").parts
    rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    (node_span,) = [
        r["span_id"] for r in rows if r["record_type"] == "node" and r["node_id"] == "m"
    ]
    steps = [r for r in rows if r["record_type"] == "attempt" and r["node_id"] == "m"]
    attempts = [r for r in steps if r["guard_outcome"] is None]
    assert sorted(r["map_index"] for r in attempts) == list(range(300))
    assert sum(r["guard_outcome"] == "repair" for r in steps) == 300
    assert {r["parent_span_id"] for r in attempts} == {node_span}
    assert {r["trace_id"] for r in attempts} == {result.trace_id}
    assert sum(r["cost_usd"] for r in attempts) == pytest.approx(result.cost_usd)


def _slow_pipeline(folder: Any, latency_ms: int) -> Any:
    """A pipeline file: one call per record that the sim answers after ``latency_ms``."""
    pipeline = folder / "p.py"
    pipeline.write_text(
        "from fanout import DAG\n"
        "dag = DAG('slow')\n"
        "dag.input('text')\n"
        f"dag.output(a=dag.llm('fast', '[sim:latency={latency_ms}] {{text}}', name='a'))\n",
        encoding="utf-8",
    )
    return pipeline


def test_sigterm_stops_a_ray_job_cleanly(tmp_path: Any, ray_cluster: Any) -> None:
    import signal
    import subprocess
    import sys
    import time

    records = write_records(tmp_path / "in.jsonl", 3000)
    pipeline = _slow_pipeline(tmp_path, latency_ms=300)
    out = tmp_path / "out"
    before = set(ray.util.list_named_actors())
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "run", f"{pipeline}:dag", "-i", str(records),
         "-o", str(out), "--ray", ray_cluster.address, "--workers", "2", "--concurrency", "32"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        def calls_done() -> int:
            return sum(len(p.read_text().splitlines()) for p in (out / "calls").glob("*.jsonl"))

        while not (out / "calls").exists() or calls_done() < 64:  # records are finishing
            assert time.monotonic() < deadline and proc.poll() is None, "the job never started"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    results = pq.read_table(out / "results")
    assert 0 < results.num_rows < 3000  # what finished is written; the rest can resume
    files = trace_files(out / "traces")
    assert files.parts and not files.segments  # every worker rolled its trace on the way out
    assert set(ray.util.list_named_actors()) <= before  # no worker or coordinator left behind


@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "read-on-driver"])
async def test_a_batch_job_on_ray_gives_the_rows_of_a_local_run_and_resumes(
    tmp_path: Any, sharded: bool
) -> None:
    from fanout import Engine
    from fanout.batch import run_file

    kinds = ["Great product, I love it.", "It arrived broken. Terrible.", "It is a kettle."]
    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": f"r{i}", "text": f"{kinds[i % 3]} #{i}"}) for i in range(300)]
    lines.insert(7, "{not json")
    lines.append(json.dumps({"id": "no-text", "body": "x"}))
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    async with Engine(sim_config(0.0)) as local:
        await run_file(local, classify(), source, tmp_path / "local", key="id")
    ray_out = tmp_path / "ray"
    async with RayEngine(sim_config(2.0), workers=2, journal=ray_out / "calls") as engine:
        stats = await run_file(
            engine,
            classify(),
            source,
            tmp_path / "ray",
            key="id",
            max_in_flight=64,
            shard=None if sharded else False,
            shard_min_bytes=1000,  # ~20 records a shard: several for each worker
        )
        info = await engine.worker_info()
        for _ in range(50):  # the coordinators' counts, as the driver polls them
            limits = engine.limiter_states()
            if limits and limits[0].granted >= 300:
                break
            await asyncio.sleep(0.1)
    # both workers ran records: shards they read themselves, or requests the driver sent
    ran = "jobs_run" if sharded else "completed"
    assert all(int(str(w[ran])) > 0 for w in info)
    parts = sorted(p.name for p in (ray_out / "results").glob("*.parquet"))
    assert all(("-s" in name) == sharded for name in parts)  # shard-tagged parts
    assert limits and limits[0].granted >= 300  # progress sees the cluster's rate

    columns = ["key", "status", "output_label", "error_type", "input_tokens", "output_tokens"]

    def rows(name: str) -> list[dict[str, object]]:
        table = pq.read_table(tmp_path / name / "results", columns=columns)
        return sorted(table.to_pylist(), key=lambda row: str(row["key"]))

    assert (stats.records, stats.ok, stats.errors) == (302, 300, 2)
    assert rows("ray") == rows("local")
    letters = [
        json.loads(line)["_fanout"]["key"]
        for part in (ray_out / "dead_letter").glob("*.jsonl")
        for line in part.read_text(encoding="utf-8").splitlines()
    ]
    assert len(letters) == 2 and "no-text" in letters

    # Run it again on Ray: every record has its row, so nothing runs.
    async with RayEngine(sim_config(2.0), workers=1, journal=ray_out / "calls") as engine:
        again = await run_file(engine, classify(), source, ray_out, key="id")
    assert (again.resumed, again.skipped, again.records) == (True, 302, 0)


async def test_a_worker_killed_mid_shard_loses_no_record_and_pays_no_call_twice(
    tmp_path: Any,
) -> None:
    from fanout.batch import run_file

    source = write_records(tmp_path / "in.jsonl", 1000, "great {i}")
    out = tmp_path / "out"
    with start_emulator(EmulatorConfig(latency_ms=100.0)) as emulator:
        config = parse_config(
            {
                "providers": {"emu": {"kind": "openai", "base_url": emulator.base_url}},
                "models": {"fast": {"provider": "emu", "model": "sim-small"}},
            }
        )
        async with RayEngine(config, workers=2, journal=out / "calls") as engine:
            await engine.worker_info()  # both actors up before the job starts
            job = asyncio.ensure_future(
                run_file(
                    engine, classify(), source, out, key="id", max_in_flight=32,
                    part_rows=20, shard_min_bytes=4000,
                )
            )  # fmt: skip
            victim = None
            for _ in range(1000):  # a worker in the middle of a shard that published rows
                for handle in engine.worker_handles():
                    reports = await handle.job_reports.remote()
                    if any(stats.records >= 40 for stats in reports.values()):
                        victim = handle
                        break
                if victim is not None or job.done():
                    break
                await asyncio.sleep(0.01)
            assert victim is not None, "no worker was ever seen mid-shard"
            ray.kill(victim, no_restart=False)
            stats = await job
            resent = engine.stats.resent
        accepted = emulator.stats()["accepted"]
    rows = pq.read_table(out / "results", columns=["key", "status"]).to_pylist()
    assert sorted(r["key"] for r in rows) == sorted(f"r{i}" for i in range(1000))  # once each
    assert {r["status"] for r in rows} == {"ok"} and stats.ok == len(rows) - stats.skipped
    assert resent >= 1  # the dead worker's shard ran again
    # the calls it completed were answered from the journal: only the ones in flight when
    # it died (its window of 16) may have gone out twice
    assert 1000 <= accepted <= 1000 + 16


@pytest.mark.slow
def test_a_sharded_job_whose_driver_is_killed_resumes_exactly_once(
    tmp_path: Any, ray_cluster: Any
) -> None:
    import signal
    import subprocess
    import sys
    import time

    records = write_records(tmp_path / "in.jsonl", 3000)
    pipeline = _slow_pipeline(tmp_path, latency_ms=100)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "fanout", "run", f"{pipeline}:dag", "-i", str(records),
        "-o", str(out), "--ray", ray_cluster.address, "--workers", "2", "--key", "id",
        "--max-in-flight", "64", "--part-rows", "50",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while len(list((out / "results").glob("part-*-s*.parquet"))) < 4:  # shards publish
            assert time.monotonic() < deadline and proc.poll() is None, "no shard published"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    before = pq.read_table(out / "results", columns=["key"]).num_rows
    assert 0 < before < 3000
    again = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert again.returncode == 0, again.stderr
    keys = pq.read_table(out / "results", columns=["key"]).column("key").to_pylist()
    assert sorted(keys) == sorted(f"r{i}" for i in range(3000))  # each record once
