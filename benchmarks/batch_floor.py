"""The floor under ``batch_1m.py``'s one-core figure: a record's essential work, with no engine.

What any batch job of the ``classify`` example must do per record, done with fanout's own
components in one straight function, and nothing else: read and key the record (the
job's reader), a task per record in a window of 256, render the prompt, a permit from
the model's limiter, the simulated provider's reply (zero latency), the call journal's
line, the three trace rows (attempt, node, run, with the HMACs the default content
policy keeps) through the real trace writer and its thread, and the result row through
the real results writer. No DAG executor, no retries, fallbacks, budgets, guards or
``RunResult``: the engine's share is ``batch_1m.py``'s figure minus this one.

For the ratio, each round also runs the real job in the same process: the engine
(``fanout.batch.run_file`` with tracing and the journal on) over the same records. One
process pinned to one core (like ``batch_1m.py``'s local job), best of ``--rounds``.

Run: python benchmarks/batch_floor.py [--records 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import orjson
from batch_1m import CONFIG, host_speed, machine, write_input

from fanout import Engine
from fanout.batch import run_file
from fanout.batch._readers import Record, iter_records
from fanout.batch._schema import output_types
from fanout.batch._writer import ResultWriter
from fanout.config import parse_config
from fanout.dag import DAG, LLMNode, Template
from fanout.run._context import ModelRoute, Router
from fanout.run._journal import call_key
from fanout.sim import SimProvider
from fanout.trace import ContentPolicy, TraceWriter, new_span
from fanout.types import ChatRequest, estimate_prompt_tokens

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 256


def classify() -> DAG:
    pipelines = str(ROOT / "examples" / "pipelines")
    if pipelines not in sys.path:
        sys.path.insert(0, pipelines)
    from classify import dag

    return dag


class Floor:
    """One job's components, and the work of one record."""

    def __init__(self, work: Path, route: ModelRoute | None = None) -> None:
        """``route``: the model's route (its provider and limiter); by default the
        simulated provider's, in-process."""
        if route is None:
            config = parse_config(tomllib.loads(CONFIG))
            provider = SimProvider.from_config("sim", config.providers["sim"])
            route = Router(config, {"sim": provider}, provider.clock).route("fast")
        self.route: ModelRoute = route
        plan = classify().validate()
        node = plan.nodes["label"]
        assert isinstance(node, LLMNode) and isinstance(node.prompt, Template)
        self.node, self.prompt = node, node.prompt
        work.mkdir(parents=True, exist_ok=True)
        self.content = ContentPolicy(key=b"batch-floor")
        self.traces = TraceWriter(work / "traces", job_id="floor")
        self.results = ResultWriter(work, output_types(plan))
        self.journal = os.open(work / "calls.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.ids = itertools.count(1)

    async def one(self, record: Record) -> None:
        data, key, route = record.data, record.key, self.route
        assert data is not None
        prompt = self.prompt.render({"text": data["text"]}, where="label")
        request = ChatRequest(
            model=route.config.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=self.node.max_tokens,
        )
        permit = await route.limiter.acquire(
            estimate_prompt_tokens(request.messages) + request.max_tokens
        )
        started = time.monotonic()
        response = await route.provider.complete(request, timeout_s=30)
        ended = time.monotonic()
        usage = response.usage
        permit.settle(usage.total_tokens)
        permit.release()
        route.limiter.observe(response.headers, tokens=usage.total_tokens)
        cost = route.cost_usd(usage)
        line = {
            "key": call_key("sim", request), "record": key, "content": response.content,
            "finish_reason": response.finish_reason, "tool_calls": [], "model": response.model,
            "usage": [usage.input_tokens, usage.output_tokens],
        }  # fmt: skip
        os.write(self.journal, orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        trace_id = f"{next(self.ids):032x}"
        run_span, node_span, attempt_span = (f"{next(self.ids):016x}" for _ in range(3))
        common = {
            "trace_id": trace_id, "job_id": "floor", "dag_name": "classify",
            "record_key": key, "start_time": started, "end_time": ended,
            "duration_ms": (ended - started) * 1000,
        }  # fmt: skip
        attempt = new_span(
            **common, span_id=attempt_span, parent_span_id=node_span, record_type="attempt",
            span_name=f"chat {request.model}", node_id="label", attempt=1, fallback_index=0,
            model_alias="fast", provider="sim", request_model=request.model,
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost_usd=cost,
            response_model=response.model, finish_reason=response.finish_reason,
        )  # fmt: skip
        self.content.fill(attempt, orjson.dumps(request.messages).decode(), response.content)
        self.traces.emit(attempt)
        node = new_span(
            **common, span_id=node_span, parent_span_id=run_span, record_type="node",
            span_name="llm label", node_id="label", model_alias="fast",
        )  # fmt: skip
        self.traces.emit(node)
        run = new_span(
            **common, span_id=run_span, parent_span_id=None, record_type="run",
            span_name="run classify",
        )  # fmt: skip
        self.content.fill(run, orjson.dumps({"text": data["text"]}).decode(), None)
        self.traces.emit(run)
        self.results._append(
            key, "ok", {"label": response.content}, None, None, usage.input_tokens,
            usage.output_tokens, cost, 1, ended - started, trace_id,
        )  # fmt: skip
        if self.results.due():
            self.results.commit()

    def close(self) -> None:
        self.results.close()
        self.traces.close()
        os.close(self.journal)


async def engine_job(source: Path, work: Path) -> int:
    """The same records through the real batch job (what ``fanout run`` does)."""
    config = parse_config(tomllib.loads(CONFIG))
    async with Engine(config, traces=work / "traces") as engine:
        stats = await run_file(engine, classify(), source, work, key="id", max_in_flight=WINDOW)
    return stats.ok


async def job(
    source: Path, work: Path, route: ModelRoute | None = None, window: int = WINDOW
) -> int:
    """The floor's job over ``source``: ``window`` records in flight; records done."""
    floor = Floor(work, route)
    tasks: set[asyncio.Task[None]] = set()
    room = asyncio.Semaphore(window)
    loop = asyncio.get_running_loop()

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        room.release()

    records = 0
    for record in iter_records(source, key="id"):
        await room.acquire()
        task = loop.create_task(floor.one(record))
        tasks.add(task)
        task.add_done_callback(done)
        records += 1
    await asyncio.gather(*tasks)
    floor.close()
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    os.environ.setdefault("FANOUT_TRACE_KEY", "batch-floor")  # the engine's HMAC key
    print(f"machine: {machine()}")
    print(f"host speed: a 10M-addition Python loop takes {host_speed():.2f} s on core 0")
    best = {"floor": (0.0, float("inf")), "engine": (0.0, float("inf"))}
    with tempfile.TemporaryDirectory(prefix="batch-floor-") as tmp:
        source = write_input(Path(tmp) / "records.jsonl", args.records)
        for round_no in range(args.rounds):
            for label, run in (("floor", job), ("engine", engine_job)):
                work = Path(tmp) / f"out-{label}-{round_no}"
                wall, cpu = time.perf_counter(), time.process_time()
                records = asyncio.run(run(source, work))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                shutil.rmtree(work)
                if records != args.records:
                    raise SystemExit(f"{label}: {records} of {args.records} records ran")
                rate, per_record = records / wall, cpu / records * 1e6
                print(
                    f"round {round_no} {label:<6}  {rate:>7,.0f} records/s  "
                    f"{per_record:>4.0f} µs CPU a record"
                )
                best[label] = (max(best[label][0], rate), min(best[label][1], per_record))
    (floor_rate, floor_cpu), (engine_rate, engine_cpu) = best["floor"], best["engine"]
    print(f"floor:  {floor_rate:,.0f} records/s, {floor_cpu:.0f} µs CPU a record (best of rounds)")
    print(
        f"engine: {engine_rate:,.0f} records/s, {engine_cpu:.0f} µs CPU a record (best of rounds)"
    )
    print(
        f"the engine's share: {engine_cpu - floor_cpu:.0f} µs a record "
        f"({(engine_cpu - floor_cpu) / engine_cpu:.0%} of the job's CPU); 10,000 records/s "
        f"leave {1e6 / 10_000 - floor_cpu:.0f} µs a record above the floor"
    )


if __name__ == "__main__":
    main()
