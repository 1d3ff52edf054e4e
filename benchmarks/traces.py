"""Trace writing throughput, and what tracing costs a request.

1. Spans written per second on one core: real spans (run, node and attempt rows of
   the demo pipeline on the simulated provider, HMAC content) are fed to a
   ``TraceWriter`` again and again; the writer's clock covers conversion to Arrow,
   the crash-safe log and the roll into Parquet. Target: >= 200,000 spans/s.
   ``emit`` (on the event loop) is timed apart.
2. With ``--overhead``: ``benchmarks/overhead.py``'s engine against the emulator,
   with tracing off, on (Parquet), and on with live OpenTelemetry export as well (OTLP
   protobuf over HTTP to a receiver in another process, pinned beside the emulator),
   rounds interleaved. Targets: tracing costs <= 5% of requests/s; so does live export
   on top of it.

Run: python benchmarks/traces.py [--spans 1000000] [--overhead]
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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import mean

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=2_000, help="demo records to trace")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overhead", action="store_true", help="also run the engine overhead")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, writer thread too
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

        with (
            overhead.emulator() as (root, _),
            otlp_sink() as (otlp, received),
            tempfile.TemporaryDirectory() as tmp,
        ):
            base, live = f"{root}/v1", OtelSettings(endpoint=f"{otlp}/v1/traces")
            off, on, both = [], [], []
            for r in range(args.rounds):
                off.append(asyncio.run(overhead.engine_rps(base, 5.0, 8)))
                on.append(asyncio.run(overhead.engine_rps(base, 5.0, 8, f"{tmp}/{r}")))
                both.append(asyncio.run(overhead.engine_rps(base, 5.0, 8, f"{tmp}/l{r}", live)))
        posts = received()
        print(f"engine, no trace    {mean(off):12,.0f} requests/s  {[round(x) for x in off]}")
        print(f"engine, traced      {mean(on):12,.0f} requests/s  {[round(x) for x in on]}")
        print(f"traced + live OTLP  {mean(both):12,.0f} requests/s  {[round(x) for x in both]}"
              f"  ({posts:,} export requests received)")  # fmt: skip
        print(f"traced / untraced   {mean(on) / mean(off):12.3f}  (target >= 0.95)")
        print(f"live / traced       {mean(both) / mean(on):12.3f}  (target >= 0.95)")
        print(f"live / untraced     {mean(both) / mean(off):12.3f}")


if __name__ == "__main__":
    main()
