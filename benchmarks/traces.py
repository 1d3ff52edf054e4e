"""Trace writing throughput, and what tracing costs a request.

1. Spans written per second on one core: real spans (run, node and attempt rows of
   the demo pipeline on the simulated provider, HMAC content) are fed to a
   ``TraceWriter`` again and again; the writer's clock covers conversion to Arrow,
   the crash-safe log and the roll into Parquet. Target: >= 200,000 spans/s.
   ``emit`` (on the event loop) is timed apart.
2. With ``--overhead``: ``benchmarks/overhead.py``'s engine (32 workers) against the
   emulator, the engine pinned to the first CPU, the emulator to the last, rounds
   interleaved: tracing off; on (Parquet); on with live OpenTelemetry export as well
   (OTLP protobuf over HTTP to a receiver in another process, on the last CPU), its
   exporter process placed on the last CPU ("live") and, as a second row, left on the
   engine's CPU ("live, same core": what a one-core machine pays). Targets: tracing
   costs <= 5% of requests/s; so does live export on top of it. Each mode's CPU a
   request is the engine process's (all its threads); the hand-off thread's share of
   it and the exporter process's CPU a span (the mapping, encoding and HTTP) are
   printed as well.

Run: python benchmarks/traces.py [--spans 1000000] [--overhead [--workers 32] [--seconds 5]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

import pyarrow.parquet as pq

from fanout import Engine
from fanout._demo import iter_sample
from fanout._demo.pipeline import dag as demo_dag
from fanout.config import default_config
from fanout.trace import Span, TraceWriter, trace_files


class _Collect:
    def __init__(self) -> None:
        self.spans: list[Span] = []

    def emit(self, span: Span) -> None:
        self.spans.append(span)


async def real_spans(records: int) -> list[Span]:
    """The trace of ``records`` demo records (sim provider, no latency)."""
    sink = _Collect()
    data = default_config().model_dump()
    data["providers"]["sim"]["latency_ms"] = 0.0
    samples = [r for r in iter_sample() if isinstance(r.get("text"), str)]
    async with Engine(default_config().model_validate(data), traces=sink) as engine:
        for start in range(0, records, 200):
            batch = [samples[i % len(samples)] for i in range(start, min(records, start + 200))]
            await asyncio.gather(*(engine.run(demo_dag, {"text": r["text"]}) for r in batch))
    return sink.spans


def writer_rate(spans: list[Span], total: int, directory: Path) -> tuple[float, float, int, int]:
    """(writer spans/s, emit µs/span, part bytes, row groups) for ``total`` spans.

    Spans are emitted in chunks of 20,000 (about what a busy engine emits between two
    flushes), each followed by a flush; the writer's time is the flushes (conversion,
    the crash-safe log) plus the final roll into Parquet. Emitting is timed apart: it
    runs on the caller's thread (the event loop), and its cost is in the overhead figure.
    """
    chunk = 20_000
    emit_s = write_s = 0.0
    writer = TraceWriter(directory, job_id="bench", flush_interval_s=3600)
    emitted = 0
    while emitted < total:
        start = time.perf_counter()
        for i in range(emitted, min(total, emitted + chunk)):
            writer.emit(spans[i % len(spans)])
        emit_s += time.perf_counter() - start
        emitted = min(total, emitted + chunk)
        start = time.perf_counter()
        writer.flush()
        write_s += time.perf_counter() - start
    start = time.perf_counter()
    writer.close()
    write_s += time.perf_counter() - start
    parts = trace_files(directory).parts
    size = sum(p.stat().st_size for p in parts)
    groups = sum(pq.ParquetFile(p).metadata.num_row_groups for p in parts)
    return total / write_s, emit_s / total * 1e6, size, groups


@contextlib.contextmanager
def otlp_sink() -> Iterator[tuple[str, Callable[[], int]]]:
    """An OTLP/HTTP receiver in its own process (pinned to the last CPU, beside the
    emulator): answers every export 200 and counts them, decoding nothing."""
    import overhead

    port = overhead.free_port()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    proc = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER, str(port)],
        preexec_fn=lambda: overhead.pin(cpus[-1]),
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.readline()  # "ready"
    counted = [0]

    def received() -> int:
        return counted[0]

    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        proc.stdin.close()  # the receiver prints its count and exits
        counted[0] = int(proc.stdout.readline() or 0)
        proc.wait(timeout=10)


_RECEIVER = """
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
count = [0]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        count[0] += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
print(count[0], flush=True)
"""


@dataclass
class Mode:
    """One way of running the engine, and what each round of it measured."""

    label: str
    traced: bool = False
    live: bool = False
    exporter_cpu: int | None = None  # live: where the exporter process runs (None: stays)
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # the engine process's, a request
    export_us: list[float] = field(default_factory=list)  # the exporter's, a span
    handoff_us: list[float] = field(default_factory=list)  # the hand-off thread's, a request

    def row(self) -> str:
        extra = ""
        if self.export_us:
            extra = (
                f"\n{'':<20}of which the hand-off thread {mean(self.handoff_us):.1f} µs; "
                f"the exporter process {mean(self.export_us):.1f} µs CPU a span"
            )
        return (
            f"{self.label:<19} {mean(self.rates):9,.0f} requests/s "
            f"{[round(x) for x in self.rates]}, {mean(self.cpu_us):6.1f} µs CPU a request"
            f"{extra}"
        )


async def engine_round(base_url: str, seconds: float, workers: int, mode: Mode, work: Path,
                       otel: Any) -> None:  # fmt: skip
    """``workers`` loops of ``Engine.run`` (``benchmarks/overhead.py``'s DAG) for
    ``seconds``; the time includes closing the engine (the live exporter sends what is
    queued); the CPU is this process's (all its threads), not the exporter process's."""
    import overhead

    from fanout.trace import OtelSink

    dag, cfg = overhead.classify(), overhead.config(base_url, workers, "openai")
    start, cpu = time.perf_counter(), time.process_time()
    traces = work if mode.traced else None
    async with Engine(cfg, traces=traces, otel=otel if mode.live else False) as engine:
        engine.open_traces()
        sink = engine.otel_sink
        if mode.exporter_cpu is not None and sink is not None and sink.pid is not None:
            os.sched_setaffinity(sink.pid, {mode.exporter_cpu})

        async def one(w: int, i: int) -> None:
            result = await engine.run(dag, {"text": f"{overhead.TEXTS[(w + i) % 3]} #{w}-{i}"})
            assert result.ok, result.error_message

        handoff = _thread_cpu("fanout-otel-handoff")
        done = await overhead.workers(workers, seconds, one)
        handoff = _thread_cpu("fanout-otel-handoff") - handoff
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    mode.rates.append(done / wall)
    mode.cpu_us.append(cpu / done * 1e6)
    if isinstance(sink, OtelSink):
        if sink.stats.failed or sink.stats.dropped:
            raise SystemExit(f"live export lost spans: {sink.stats}")
        mode.export_us.append(sink.stats.cpu_s / max(1, sink.stats.exported) * 1e6)
        mode.handoff_us.append(handoff / done * 1e6)


def _thread_cpu(name: str) -> float:
    """CPU seconds the thread ``name`` of this process has used (Linux /proc; 0 if none)."""
    for thread in threading.enumerate():
        if thread.name == name and thread.native_id is not None:
            with open(f"/proc/self/task/{thread.native_id}/stat", encoding="utf-8") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _pin(cpus: set[int]) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=2_000, help="demo records to trace")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overhead", action="store_true", help="also run the engine overhead")
    parser.add_argument("--workers", type=int, default=32, help="engine workers (--overhead)")
    parser.add_argument("--seconds", type=float, default=5.0, help="a round (--overhead)")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    _pin({cpus[0]})  # one core, writer thread too
    os.environ.setdefault("FANOUT_TRACE_KEY", "benchmark-key")
    spans = asyncio.run(real_spans(args.records))
    kinds = {k: sum(s.record_type == k for s in spans) for k in ("run", "node", "attempt")}
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, "
        f"python {platform.python_version()}; pinned to one core"
    )
    print(f"spans of {args.records} demo records: {len(spans):,} {kinds}")
    rates, emits = [], []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            rate, emit_us, size, groups = writer_rate(spans, args.spans, Path(tmp) / str(r))
        rates.append(rate)
        emits.append(emit_us)
    print(
        f"spans written       {mean(rates):12,.0f} spans/s  {[round(r) for r in rates]}"
        f"  (target >= 200,000)"
    )
    print(f"emit, on the loop   {mean(emits):12.2f} µs/span")
    print(f"parquet             {size / args.spans:12.1f} bytes/span, {groups} row groups")
    if args.overhead:
        import overhead  # benchmarks/overhead.py, next to this file

        from fanout.trace import OtelSettings

        _pin(set(cpus))  # the emulator and the receiver go to the last CPU, then
        with (
            overhead.emulator() as (root, _),
            otlp_sink() as (otlp, received),
            tempfile.TemporaryDirectory() as tmp,
        ):
            _pin({cpus[0]})  # the engine to the first
            base, live = f"{root}/v1", OtelSettings(endpoint=f"{otlp}/v1/traces")
            modes = [
                Mode("engine, no trace"),
                Mode("engine, traced", traced=True),
                Mode("traced + live OTLP", traced=True, live=True, exporter_cpu=cpus[-1]),
                Mode("  live, same core", traced=True, live=True),
            ]
            for r in range(args.rounds):  # each round in another order: no mode always first
                for m in range(len(modes)):
                    mode = modes[(m + r) % len(modes)]
                    work = Path(tmp, f"{r}-{m}")
                    asyncio.run(engine_round(base, args.seconds, args.workers, mode, work, live))
        off, on, both, same = modes
        print(f"engine: {args.workers} workers on CPU {cpus[0]}; emulator, OTLP receiver and"
              f" (unless 'same core') the exporter process on CPU {cpus[-1]}")  # fmt: skip
        for mode in modes:
            print(mode.row())
        print(f"{received():,} export requests received")
        rate = mean(on.rates) / mean(off.rates)
        print(f"traced / untraced   {rate:12.3f} requests/s  (target >= 0.95)")
        for label, mode in (("live / traced", both), ("same core / traced", same)):
            rate, cpu = mean(mode.rates) / mean(on.rates), mean(on.cpu_us) / mean(mode.cpu_us)
            target = "  (target >= 0.95)" if mode is both else ""
            print(f"{label:<19} {rate:12.3f} requests/s, {cpu:.3f} CPU a request{target}")


if __name__ == "__main__":
    main()
