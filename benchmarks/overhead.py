"""Engine overhead over the network path: ``fanout run`` vs a bare aiohttp + uvloop loop.

Starts ``fanout sim-server`` (zero latency, no limits) in its own process pinned to
the last CPU, pins this process (the client) to CPU 0, and measures, round after
round in one run, at the same concurrency (``--concurrency``, 200):

  bare aiohttp  the ceiling: an ``aiohttp.ClientSession`` on uvloop posting the same
                chat-completion body from N workers, orjson in and out, checking each reply
  bare reqwest  the same loop over one pyreqwest ``Client`` (Rust's reqwest and hyper)
  bare httpx    the same loop with one ``httpx.AsyncClient`` of N connections (asyncio)
  fanout run    what ``fanout run`` does (``fanout.batch.run_file``, on the CLI's event
                loop): the ``classify`` example over ``--records`` records, N in flight,
                the results, the call journal and the trace (run, node and attempt rows
                with the default content HMACs) written; every record must be ok. The
                provider's config names no ``http_client``, so the client is the one
                ``fanout run`` picks (``fanout.batch.batch_clients``: pyreqwest when it is
                installed), printed below
  fanout aiohttp  the same ``fanout run`` with the provider's ``http_client = "aiohttp"``
  fanout no net the same ``fanout run`` over an in-process transport that answers each
                call after one turn of the loop with a reply the emulator gave (its
                status, headers and body): every step of a record but the socket's
  floor aiohttp  a record's essential work and nothing else (``batch_floor.py``'s
                ``Floor``: read and key it, render, a permit, the journal line, three
                trace rows, the result row) with the real provider over aiohttp, no DAG
                executor, no ``RunResult``: the most any engine could reach over this
                client, so ``fanout run``'s ratio can never pass this row's
  floor reqwest the same essential work over pyreqwest
  aiohttp+work  the bare aiohttp loop doing ``--work-us`` of plain Python (no allocation
                the collector sees) before each request: what alternating other work with
                the client's costs on one core, apart from fanout
  Engine.run    N workers calling ``Engine.run`` of the same DAG, traced (a service's path)
  Engine.run anth  the same over the Anthropic Messages protocol (the emulator's
                /v1/messages): the per-call cost of a second protocol against OpenAI's
  long reply    ``Engine.run`` of a summary step (a ~35-token reply), traced, not streamed
  long streamed the same step with ``stream=True``: the emulator sends a piece of text per
                server-sent event and the client parses each (time to first token traced)

and prints requests/s (records/s for ``fanout run``), the client's CPU µs per request,
and the emulator's CPU share while each ran: the emulator must stay well under one
core, or it (not the client) is what the figures measure. The ratio printed is
``fanout run`` over bare aiohttp, the best round of each (target >= 0.5); how much more
``fanout run`` costs than its two parts alone (the bare client and ``fanout no net``),
next to what the same interleaving costs the bare loop (``aiohttp+work``); the Anthropic
protocol's client CPU a call against OpenAI's; and the streamed path's client CPU per
output token against the same reply not streamed.

Run: python benchmarks/overhead.py [--seconds 4] [--records 20000] [--concurrency 200]
     [--rounds 3] [--work-us 40]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
from batch_1m import machine
from batch_floor import job as floor_job

from fanout import DAG, Engine, parse_config
from fanout.batch import batch_clients, run_file
from fanout.cli._loop import run as cli_run
from fanout.clock import SystemClock
from fanout.providers import OpenAIProvider
from fanout.providers._build import build_http_provider
from fanout.providers._http import Reply
from fanout.run._context import Router
from fanout.trace import OtelSettings

PROMPT = "Classify the sentiment of this review as positive, negative or neutral. Review: {text}"
TEXTS = ["great, I love it", "broken and late, terrible", "it is a chair"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pin(cpu: int) -> None:
    """Run this process on ``cpu`` alone (a child may be pinned to a CPU its parent is not
    on: the test of membership this replaced left the emulator on the client's core)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def emulator() -> Iterator[tuple[str, int]]:
    """``fanout sim-server`` pinned to the last CPU; yields its root URL and process id."""
    port = free_port()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    server_cpu = cpus[-1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "sim-server", "--port", str(port)],
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: pin(server_cpu),
    )
    root = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{root}/stats").raise_for_status()
                break
            time.sleep(0.05)
        yield root, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def body(w: int, i: int) -> dict[str, object]:
    text = f"{TEXTS[(w + i) % 3]} #{w}-{i}"
    return {
        "model": "sim-small",
        "messages": [{"role": "user", "content": PROMPT.format(text=text)}],
        "max_tokens": 5,
        "temperature": 0.0,
    }


async def workers(
    concurrency: int, seconds: float, one: Callable[[int, int], Coroutine[Any, Any, None]]
) -> int:
    """``concurrency`` loops calling ``one(worker, i)`` for ``seconds``; calls done."""
    done = 0
    end = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < end:
            await one(w, i)
            done += 1
            i += 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done


async def bare_aiohttp(
    base_url: str, seconds: float, concurrency: int, work: Callable[[], None] | None = None
) -> int:
    """The ceiling; with ``work``, calling it before each request."""
    url = f"{base_url}/chat/completions"
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(w: int, i: int) -> None:
            if work is not None:
                work()
            async with session.post(url, data=orjson.dumps(body(w, i)), headers=headers) as r:
                data = orjson.loads(await r.read())
            assert data["choices"][0]["message"]["content"]

        return await workers(concurrency, seconds, one)


async def bare_reqwest(base_url: str, seconds: float, concurrency: int) -> int:
    from pyreqwest.client import ClientBuilder

    url = f"{base_url}/chat/completions"
    builder = ClientBuilder().max_connections(concurrency).http1_only()
    async with builder.build() as client:

        async def one(w: int, i: int) -> None:
            request = client.post(url).header("content-type", "application/json")
            response = await request.body_bytes(orjson.dumps(body(w, i))).build().send()
            data = orjson.loads(bytes(await response.bytes()))
            assert data["choices"][0]["message"]["content"]

        return await workers(concurrency, seconds, one)


async def bare_httpx(base_url: str, seconds: float, concurrency: int) -> int:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def one(w: int, i: int) -> None:
            response = await client.post("/chat/completions", json=body(w, i))
            assert response.json()["choices"][0]["message"]["content"]

        return await workers(concurrency, seconds, one)


def config(
    base_url: str, concurrency: int, kind: str = "openai", http_client: str | None = "aiohttp"
) -> Any:
    """The emulator as provider ``emu`` and model ``fast``; ``http_client=None`` names no
    client (what a config that leaves it out says)."""
    provider: dict[str, object] = {"kind": kind, "base_url": base_url}
    if http_client is not None:
        provider["http_client"] = http_client
    provider["max_concurrency"] = concurrency
    if kind == "anthropic":
        provider["api_key_env"] = "OVERHEAD_BENCH_KEY"  # the emulator takes any key
    return parse_config(
        {
            "providers": {"emu": provider},
            "models": {"fast": {"provider": "emu", "model": "sim-small"}},
        }
    )


LONG = "Summarise this review for the support team: {text} and the rest of the story"


def summary(*, stream: bool) -> DAG:
    dag = DAG("summary")
    dag.input("text")
    dag.output(summary=dag.llm("fast", LONG, max_tokens=60, stream=stream))
    return dag


async def stream_loop(
    base_url: str,
    seconds: float,
    concurrency: int,
    traces: Path,
    *,
    stream: bool,
    tokens: list[int],
) -> int:
    """``Engine.run`` of the summary step (streamed or not); counts output tokens and
    replies into ``tokens``."""
    dag = summary(stream=stream)
    async with Engine(config(base_url, concurrency), traces=traces) as engine:

        async def one(w: int, i: int) -> None:
            result = await engine.run(dag, {"text": f"{TEXTS[(w + i) % 3]} #{w}-{i}"})
            assert result.ok, result.error_message
            tokens[0] += result.usage.output_tokens
            tokens[1] += 1

        return await workers(concurrency, seconds, one)


def classify() -> DAG:
    dag = DAG("classify")
    dag.input("text")
    dag.output(label=dag.llm("fast", PROMPT, max_tokens=5))
    return dag


async def engine_loop(
    base_url: str,
    seconds: float,
    concurrency: int,
    traces: Path | str | None,
    otel: OtelSettings | bool = False,
    kind: str = "openai",
) -> int:
    dag = classify()
    cfg = config(base_url, concurrency, kind)
    async with Engine(cfg, traces=traces, otel=otel) as engine:

        async def one(w: int, i: int) -> None:
            result = await engine.run(dag, {"text": f"{TEXTS[(w + i) % 3]} #{w}-{i}"})
            assert result.ok, result.error_message

        return await workers(concurrency, seconds, one)


def run_config(base_url: str, concurrency: int, http_client: str | None = None) -> Any:
    """The config ``fanout run`` would run with: with no client named, the CLI's choice
    (:func:`fanout.batch.batch_clients`)."""
    return batch_clients(config(base_url, concurrency, http_client=http_client))


async def fanout_run(
    base_url: str, concurrency: int, source: Path, work: Path, http_client: str | None = None
) -> int:
    engine = Engine(run_config(base_url, concurrency, http_client), traces=work / "traces")
    async with engine:
        stats = await run_file(engine, classify(), source, work, key="id",
                               max_in_flight=concurrency)  # fmt: skip
    if stats.failed:
        raise SystemExit(f"fanout run: {stats.failed} records failed")
    return stats.ok


class InstantTransport:
    """Answers every POST with ``reply`` after one turn of the event loop (no socket)."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply

    async def post(
        self, path: str, body: bytes, *, timeout_s: float, headers: Any = None
    ) -> Reply:
        await asyncio.sleep(0)
        return self.reply

    async def aclose(self) -> None:
        return None


async def floor_run(
    base_url: str, concurrency: int, source: Path, work: Path, http_client: str = "aiohttp"
) -> int:
    """``batch_floor.py``'s floor job with the model's route over the emulator."""
    cfg = config(base_url, concurrency, http_client=http_client)
    provider = build_http_provider("emu", cfg.providers["emu"])
    route = Router(cfg, {"emu": provider}, SystemClock()).route("fast")
    try:
        return await floor_job(source, work, route, window=concurrency)
    finally:
        await provider.aclose()


async def captured_reply(base_url: str) -> Reply:
    """One real reply of the emulator to the classify prompt: status, headers, body."""
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{base_url}/chat/completions", json=body(0, 0))
    answer.raise_for_status()
    return Reply(answer.status_code, dict(answer.headers), answer.content)


async def fanout_no_net(
    base_url: str, concurrency: int, source: Path, work: Path, reply: Reply
) -> int:
    """``fanout_run`` with the provider over :class:`InstantTransport`."""
    provider = OpenAIProvider(
        "emu", base_url=base_url, max_connections=concurrency, transport=InstantTransport(reply)
    )
    engine = Engine(
        config(base_url, concurrency), providers={"emu": provider}, traces=work / "traces"
    )
    async with engine:
        stats = await run_file(engine, classify(), source, work, key="id",
                               max_in_flight=concurrency)  # fmt: skip
    if stats.failed:
        raise SystemExit(f"fanout no net: {stats.failed} records failed")
    return stats.ok


def spin(micros: float) -> Callable[[], None]:
    """A function taking about ``micros`` µs of plain Python (integers only: nothing the
    collector tracks), calibrated here."""
    def run(n: int) -> None:
        total = 0
        for i in range(n):
            total += i * i
    n = 10_000
    start = time.process_time()
    for _ in range(100):
        run(n)
    per = (time.process_time() - start) / 100 / n * 1e6  # µs an iteration
    count = max(1, round(micros / per))
    return lambda: run(count)


def write_records(path: Path, count: int) -> Path:
    with path.open("wb") as out:
        for i in range(count):
            out.write(orjson.dumps({"id": f"r{i}", "text": f"{TEXTS[i % 3]} #{i}"}) + b"\n")
    return path


@dataclass
class Row:
    label: str
    rates: list[float]
    cpu_us: list[float]  # client CPU per request
    emulator_cores: list[float]

    def best(self) -> float:
        return max(self.rates)


def measure(row: Row, pid: int, run: Callable[[], int]) -> None:
    emu, wall, cpu = cpu_seconds(pid), time.perf_counter(), time.process_time()
    done = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    row.rates.append(done / wall)
    row.cpu_us.append(cpu / done * 1e6)
    row.emulator_cores.append((cpu_seconds(pid) - emu) / wall)


def uvloop_run(coro: Coroutine[Any, Any, int]) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per timed loop")
    parser.add_argument("--records", type=int, default=20_000, help="per fanout run")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work-us", type=float, default=40.0, help="aiohttp+work's work")
    args = parser.parse_args()
    os.environ.setdefault("FANOUT_TRACE_KEY", "benchmark-key")
    os.environ.setdefault("OVERHEAD_BENCH_KEY", "sk-overhead-bench")
    n, s = args.concurrency, args.seconds
    rows = {
        label: Row(label, [], [], [])
        for label in ("bare aiohttp", "bare reqwest", "bare httpx", "fanout run",
                      "fanout aiohttp", "fanout no net", "floor aiohttp", "floor reqwest",
                      "aiohttp+work", "Engine.run",
                      "Engine.run anth", "long reply", "long streamed")
    }  # fmt: skip
    tokens = {"long reply": [0, 0], "long streamed": [0, 0]}  # output tokens, replies
    with emulator() as (root, pid), tempfile.TemporaryDirectory() as tmp:
        pin(0)  # after the emulator started: its child process is pinned apart
        url = f"{root}/v1"
        source = write_records(Path(tmp) / "records.jsonl", args.records)
        uvloop_run(bare_aiohttp(url, 1.0, n))  # warm-up: imports, the emulator's first calls
        reply = asyncio.run(captured_reply(url))
        work_us = spin(args.work_us)
        for r in range(args.rounds):
            work = Path(tmp) / f"run-{r}"
            runs: dict[str, Callable[[], int]] = {
                "bare aiohttp": lambda: uvloop_run(bare_aiohttp(url, s, n)),
                "bare reqwest": lambda: uvloop_run(bare_reqwest(url, s, n)),
                "bare httpx": lambda: asyncio.run(bare_httpx(url, min(s, 2), n)),
                "fanout run": lambda: cli_run(fanout_run(url, n, source, work)),  # noqa: B023  # called at once
                "fanout aiohttp": lambda: cli_run(fanout_run(  # http_client = "aiohttp"
                    url, n, source, work / "aiohttp", "aiohttp")),  # noqa: B023
                "fanout no net": lambda: cli_run(fanout_no_net(
                    url, n, source, work / "no-net", reply)),  # noqa: B023
                "floor aiohttp": lambda: cli_run(floor_run(url, n, source, work / "floor")),  # noqa: B023
                "floor reqwest": lambda: cli_run(floor_run(
                    url, n, source, work / "floor-rq", "reqwest")),  # noqa: B023
                "aiohttp+work": lambda: uvloop_run(bare_aiohttp(url, s, n, work_us)),
                "Engine.run": lambda: cli_run(engine_loop(url, s, n, work / "traces-e")),  # noqa: B023
                "Engine.run anth": lambda: cli_run(engine_loop(  # the Anthropic protocol
                    url, s, n, work / "traces-a", kind="anthropic")),  # noqa: B023
                "long reply": lambda: cli_run(stream_loop(
                    url, s, n, work / "traces-l", stream=False, tokens=tokens["long reply"])),  # noqa: B023
                "long streamed": lambda: cli_run(stream_loop(
                    url, s, n, work / "traces-s", stream=True, tokens=tokens["long streamed"])),  # noqa: B023
            }  # fmt: skip
            for label, run in runs.items():
                measure(rows[label], pid, run)
            shutil.rmtree(work)
    print(f"machine: {machine()}")
    print(f"client pinned to CPU 0, the emulator to another; concurrency {n}")
    print(f"{'':14}{'best/s':>8}  {'µs CPU/req':>10}  {'emulator cores':>14}  rounds")
    for row in rows.values():
        print(
            f"{row.label:14}{row.best():8,.0f}  {min(row.cpu_us):10.0f}  "
            f"{max(row.emulator_cores):14.2f}  {[round(x) for x in row.rates]}"
        )
    ceiling = rows["bare aiohttp"].best()
    chosen = run_config(url, n).providers["emu"].http_client
    ratio = rows["fanout run"].best() / ceiling
    print(f"fanout run's HTTP client (no http_client in its config): {chosen}")
    print(f"ratio fanout run / bare aiohttp  {ratio:.2f} (target >= 0.5)")
    for client in ("aiohttp", "reqwest"):
        floor = rows[f"floor {client}"].best() / ceiling
        print(f"ratio floor ({client}) / bare aiohttp  {floor:.2f} (no engine could pass it)")
    over_aiohttp = rows["fanout aiohttp"].best() / ceiling
    print(f"ratio fanout run (http_client = aiohttp) / bare aiohttp  {over_aiohttp:.2f}")
    over_own = rows["fanout run"].best() / rows[f"bare {chosen}"].best()
    print(f"ratio fanout run / bare {chosen}  {over_own:.2f}")
    cpu = {label: min(row.cpu_us) for label, row in rows.items()}
    bare, together, alone = cpu[f"bare {chosen}"], cpu["fanout run"], cpu["fanout no net"]
    print(
        f"fanout run {together:.0f} µs a record against its parts alone {bare:.0f} +"
        f" {alone:.0f} (bare {chosen}, fanout no net): {together - bare - alone:+.0f} µs"
    )
    worked = cpu["aiohttp+work"]
    print(
        f"the bare loop plus {args.work_us:.0f} µs of Python a request: {worked:.0f} µs"
        f" ({worked - bare - args.work_us:+.0f} µs together)"
    )
    print(f"ratio Engine.run / bare aiohttp  {rows['Engine.run'].best() / ceiling:.2f}")
    print(f"ratio bare httpx / bare aiohttp  {rows['bare httpx'].best() / ceiling:.2f}")
    anth, oai = min(rows["Engine.run anth"].cpu_us), min(rows["Engine.run"].cpu_us)
    print(f"Anthropic protocol: {anth:.0f} µs client CPU a call, {anth / oai:.2f}x OpenAI's")
    plain, streamed = rows["long reply"], rows["long streamed"]
    done, replies = tokens["long streamed"]
    mean_tokens = done / max(1, replies)
    us_plain = min(plain.cpu_us) / mean_tokens
    us_stream = min(streamed.cpu_us) / mean_tokens
    print(f"long reply: {mean_tokens:.1f} output tokens a reply")
    print(
        f"client CPU per output token: not streamed {us_plain:.1f} µs, streamed "
        f"{us_stream:.1f} µs (+{us_stream - us_plain:.1f} µs a token for streaming)"
    )


if __name__ == "__main__":
    main()
