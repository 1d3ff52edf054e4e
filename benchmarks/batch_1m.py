"""A million records through the ``classify`` example: throughput and peak memory of every process.

The simulated provider answers at once with no rate limit, so what is measured is
fanout itself: reading, keying, the engine (one llm node per record), tracing (on),
the call journal and the results dataset. Each job is a real ``fanout run`` process;
the local one is pinned to one core. Peak RSS: the driver's from ``wait4`` (exact),
every other process's (Ray's workers, raylet, GCS) from ``VmHWM`` sampled twice a
second while the job runs.

  local     --records records, one process on one core (target >= 10,000 records/s,
            driver peak RSS <= 1 GiB)
  memory    the same job with --small records: the two peaks within 20% of each other
  ray       --ray-records records on a local Ray instance with --workers workers: the
            input cut into shards that each worker reads and writes (the default), then
            with --read-on-driver (the driver reads every record and writes every row)

Run: python benchmarks/batch_1m.py [--records 1000000] [--small 100000]
                                   [--ray-records 1000000] [--workers 2] [--skip-ray]
                                   [--skip-ray-driver]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
CLASSIFY = f"{ROOT / 'examples' / 'pipelines' / 'classify.py'}:dag"
TEXTS = (
    "Great product, I love it.",
    "It arrived broken. Terrible.",
    "It is a kettle. It boils water.",
)
CONFIG = """
[providers.sim]
kind = "sim"
latency_ms = 0
jitter_sigma = 0
max_concurrency = 100000

[models.fast]
provider = "sim"
model = "sim-small"
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.60
"""
MIB = 1024 * 1024


@dataclass
class Job:
    label: str
    records: int
    wall_s: float
    job_rps: float  # as the job's own summary reports it (reading to last row written)
    driver_peak: int  # bytes
    others: dict[int, tuple[str, int]] = field(default_factory=dict)  # pid -> (name, peak)
    rows: int = 0


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def host_speed() -> float:
    """Seconds for a plain Python loop of 10 million additions, best of 3, on the pinned
    core: a yardstick to compare hosts (records/s scale roughly inversely with it)."""
    best = float("inf")
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def write_input(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            out.write(json.dumps({"id": f"r{i}", "text": f"{TEXTS[i % 3]} #{i}"}) + "\n")
    return path


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid]
        found.extend(children)
        frontier.extend(children)
    return found


def _peak(pid: int) -> tuple[str, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return None
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return (cmdline.rsplit("/", 1)[-1][:40], int(match.group(1)) * 1024) if match else None


def run_job(label: str, source: Path, records: int, out: Path, extra: list[str]) -> Job:
    config = out.parent / f"{out.name}.toml"
    config.write_text(CONFIG, encoding="utf-8")
    command = [
        sys.executable, "-m", "fanout", "run", CLASSIFY, "-i", str(source), "-o", str(out),
        "-c", str(config), "--key", "id", "--max-in-flight", "256", *extra,
    ]  # fmt: skip
    pin = "--ray" not in extra and hasattr(os, "sched_setaffinity")
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if pin else None,  # one core
    )
    others: dict[int, tuple[str, int]] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            for pid in _descendants(proc.pid):
                seen = _peak(pid)
                if seen is None:
                    continue
                name, peak = others.get(pid, ("", 0))
                # a Ray worker's title changes with its task: keep the first telling one
                if not name or name in ("python", "ray::IDLE"):
                    # "ray::FanoutWorker.run_batch", "ray::<actor name>:FanoutWorker": the class
                    title = seen[0].split(".", 1)[0]
                    name = f"ray::{title.rsplit(':', 1)[-1]}" if ":" in title else title
                others[pid] = (name, max(peak, seen[1]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{label}: fanout run exited {proc.returncode}\n{stdout}")
    match = re.search(r"records/s\s*│\s*([\d.]+)", stdout)
    rows = sum(pq.read_metadata(p).num_rows for p in (out / "results").glob("part-*.parquet"))
    return Job(
        label,
        records,
        wall,
        float(match.group(1)) if match else 0.0,
        usage.ru_maxrss * 1024,
        others,
        rows,
    )


def report(job: Job) -> None:
    print(
        f"{job.label:<22} {job.records:>10,} records  rows {job.rows:>10,}  "
        f"{job.job_rps:>9,.0f} records/s (job)  {job.records / job.wall_s:>9,.0f} records/s "
        f"(process, {job.wall_s:.1f} s)  driver peak RSS {job.driver_peak / MIB:,.0f} MiB"
    )
    for pid, (name, peak) in sorted(job.others.items(), key=lambda item: -item[1][1]):
        print(f"{'':<24}peak RSS {peak / MIB:>7,.0f} MiB  {name} (pid {pid})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--ray-records", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-ray-driver", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    print(f"host speed: a 10M-addition Python loop takes {host_speed():.2f} s on core 0")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory(prefix="fanout-batch-") as tmp:
        work = Path(tmp)
        big = write_input(work / "big.jsonl", args.records)
        small = write_input(work / "small.jsonl", args.small)

        local = run_job("local, 1 core", big, args.records, work / "local", [])
        report(local)
        local_small = run_job("local, 1 core", small, args.small, work / "small", [])
        report(local_small)
        ratio = local.driver_peak / local_small.driver_peak
        print(
            f"memory: driver peak RSS {args.records:,} / {args.small:,} records = {ratio:.2f} "
            f"(target <= 1.20); {args.records:,} records: {local.driver_peak / MIB:,.0f} MiB "
            "(target <= 1,024)"
        )
        if not args.skip_ray:
            n = args.ray_records or args.records
            ray_input = big if n == args.records else write_input(work / "ray.jsonl", n)
            on_ray = ["--ray", "local", "--workers", str(args.workers)]
            ray = run_job(f"ray, {args.workers} workers", ray_input, n, work / "ray", on_ray)
            report(ray)
            if not args.skip_ray_driver:
                driver = run_job(
                    "ray, read on driver",
                    ray_input,
                    n,
                    work / "ray-driver",
                    [*on_ray, "--read-on-driver"],
                )
                report(driver)


if __name__ == "__main__":
    main()
