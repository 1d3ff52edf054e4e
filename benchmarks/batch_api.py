"""Online vs batch mode: cost and wall time of the same job on the emulator, side by side.

Each mode is a real ``fanout run`` process against ``fanout sim-server`` (its own
process): online under the emulator's requests/min limit and latency, batch mode
through its ``/v1/batches`` (``--kind anthropic``: its Messages API online and its
Message Batches, ``/v1/messages/batches``) with a completion delay per batch (a real
Batch API answers within 24 h; the delay is a stand-in, printed with the figures). The cost is
the results' ``cost_usd`` summed (online prices online, half of them in batch mode),
checked against the usage the emulator billed. Peak RSS is the ``fanout run``
process's own (``wait4``).

Run: python benchmarks/batch_api.py [--records 100000] [--steps 1] [--rpm 30000]
                                    [--latency-ms 300] [--batch-delay-s 120]
                                    [--kind openai|anthropic]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq

PIPELINE = """
from fanout import DAG

dag = DAG("batch_api_bench")
text = dag.input("text")
summary = dag.llm("fast", "Summarize: {text}", text=text, max_tokens=20, name="summary")
if STEPS > 1:
    label = dag.llm("fast", "Classify the sentiment of: {summary}", summary=summary,
                    max_tokens=5, name="label")
    dag.output(summary=summary, label=label)
else:
    dag.output(summary=summary)
"""
CONFIG = """
[providers.emu]
kind = "{kind}"
base_url = "{base_url}"
{key}
max_concurrency = 2048
timeout_s = 120

[providers.emu.batch]
poll_initial_s = 2
poll_max_s = 10

[models.fast]
provider = "emu"
model = "sim-small"
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.60
"""
IN_USD, OUT_USD = 0.15, 0.60
KEY_ENV = "FANOUT_BENCH_KEY"  # an anthropic provider must have a key; the emulator takes any
STATS = {"openai": "/stats/batches", "anthropic": "/stats/messages/batches"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _emulator(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fanout",
            "sim-server",
            "--port",
            str(port),
            "--rpm",
            str(args.rpm),
            "--latency-ms",
            str(args.latency_ms),
            "--batch-delay-s",
            str(args.batch_delay_s),
        ],
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{root}/stats").raise_for_status()
            return proc, root
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError("fanout sim-server did not start") from None
            time.sleep(0.1)


def _job(work: Path, name: str, extra: list[str]) -> dict[str, float]:
    out = work / name
    command = [
        sys.executable,
        "-m",
        "fanout",
        "run",
        f"{work / 'pipeline.py'}:dag",
        "-i",
        str(work / "in.jsonl"),
        "-o",
        str(out),
        "-c",
        str(work / "fanout.toml"),
        "--key",
        "id",
        "--no-traces",
        *extra,
    ]
    start = time.monotonic()
    env = {**os.environ, KEY_ENV: "sk-ant-bench"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    if status != 0:
        raise RuntimeError(f"{name} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    table = pq.read_table(out / "results", columns=["status", "cost_usd"])
    statuses = table.column("status").to_pylist()
    return {
        "wall_s": wall,
        "cost_usd": float(sum(table.column("cost_usd").to_pylist())),
        "ok": float(statuses.count("ok")),
        "rss_mib": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--steps", type=int, choices=(1, 2), default=1)
    parser.add_argument("--rpm", type=float, default=30_000.0)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--batch-delay-s", type=float, default=120.0)
    parser.add_argument("--kind", choices=tuple(STATS), default="openai")
    args = parser.parse_args()
    emulator, root = _emulator(args)
    try:
        with tempfile.TemporaryDirectory(prefix="fanout-batch-api-") as tmp:
            work = Path(tmp)
            (work / "pipeline.py").write_text(f"STEPS = {args.steps}\n{PIPELINE}", "utf-8")
            key = f'api_key_env = "{KEY_ENV}"' if args.kind == "anthropic" else ""
            config = CONFIG.format(kind=args.kind, base_url=f"{root}/v1", key=key)
            (work / "fanout.toml").write_text(config, "utf-8")
            texts = ("Great product, I love it.", "It arrived broken. Terrible.", "A kettle.")
            with (work / "in.jsonl").open("w", encoding="utf-8") as f:
                for i in range(args.records):
                    f.write(json.dumps({"id": f"r{i}", "text": f"{texts[i % 3]} #{i}"}) + "\n")
            window = str(min(args.records, 100_000))
            online = _job(work, "online", ["--max-in-flight", "1000"])
            online_usage = httpx.get(f"{root}/stats").json()
            batch = _job(work, "batch", ["--provider-batch", "--max-in-flight", window])
            billed = httpx.get(f"{root}{STATS[args.kind]}").json()
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    billed_usd = (
        billed["billed_input_tokens"] * IN_USD / 2 + billed["billed_output_tokens"] * OUT_USD / 2
    ) / 1e6
    print(
        f"batch_api: {args.records:,} records x {args.steps} llm step(s) on the emulator, "
        f"provider kind {args.kind} "
        f"(online: {args.rpm:,.0f} rpm, {args.latency_ms:g} ms a call; batch mode: "
        f"{args.batch_delay_s:g} s per batch)"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"{'':18}{'online':>14}{'batch mode':>14}{'batch/online':>14}")
    for label, key, fmt in (
        ("wall s", "wall_s", "{:,.1f}"),
        ("cost USD", "cost_usd", "{:,.4f}"),
        ("records ok", "ok", "{:,.0f}"),
        ("peak RSS MiB", "rss_mib", "{:,.0f}"),
    ):
        a, b = online[key], batch[key]
        ratio = f"{b / a:.3f}" if a else "-"
        print(f"{label:18}{fmt.format(a):>14}{fmt.format(b):>14}{ratio:>14}")
    print(
        f"batch mode billed by the emulator: ${billed_usd:,.4f} "
        f"({billed['batches_created']} batches, {billed['lines_submitted']:,} lines; "
        f"online calls accepted: {online_usage['accepted']:,})"
    )


if __name__ == "__main__":
    main()
