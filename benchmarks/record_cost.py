"""Machine instructions a batch record costs, counted by valgrind: a figure the host does not move.

Records/s on a shared VM swing by 20% and more within an hour (``batch_1m.py`` prints a
yardstick for that reason), which hides any change to the per-record path smaller
than that. This counts instead: the ``classify`` example (one llm node, the simulated
provider at zero latency, tracing and the call journal on) run with
:func:`fanout.batch.run_file` over ``--small`` and then ``--large`` records, each in a
fresh interpreter under ``valgrind --tool=callgrind``; the difference of the two
totals over the difference of the records is the cost of one record, every thread
included (the trace and results writers too), start-up and the first records' warm-up
left out; the input is written outside the count. Counts repeat to within ~2% run to
run (hash seed fixed; the writer threads flush by the clock, which valgrind slows
unevenly), so a smaller change needs several runs; compare two trees with
``--pythonpath OTHER_TREE``.

With ``--http``, the same job calls the project's emulator over HTTP instead
(``overhead.py``'s ``fanout run``: the OpenAI-compatible provider on aiohttp, 200 in
flight); the emulator runs in a process of its own, outside the count.

Needs valgrind (``apt install valgrind``); ~2 minutes with the defaults.

Run: python benchmarks/record_cost.py [--small 500] [--large 1500] [--pythonpath DIR] [--http]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from batch_1m import write_input  # the same records as the 1M benchmark
from batch_floor import engine_job  # ... and the same job
from overhead import emulator

ROOT = Path(__file__).resolve().parents[1]


def job(source: Path, records: int, output: Path, url: str) -> None:
    """The measured process: ``batch_floor.py``'s real job (``run_file``) over ``source``,
    or with ``url`` (an emulator's) ``overhead.py``'s job over HTTP."""
    if url:
        from overhead import fanout_run

        from fanout.cli._loop import run

        done = run(fanout_run(url, 200, source, output))
    else:
        done = asyncio.run(engine_job(source, output))
    if done != records:
        raise SystemExit(f"{done} of {records} records ran")


def instructions(records: int, work: Path, pythonpath: str | None, url: str) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0", "FANOUT_TRACE_KEY": "record-cost"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = work / f"callgrind-{records}.out"
    source = write_input(work / f"in-{records}.jsonl", records)  # not counted
    done = subprocess.run(
        [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            sys.executable, __file__, "--job", str(source), str(records),
            str(work / f"out-{records}"), url,
        ],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"Collected\s*:\s*([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(
            f"the job under valgrind failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    out.unlink(missing_ok=True)
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=1500)
    parser.add_argument("--pythonpath", help="measure the fanout package of another tree")
    parser.add_argument("--http", action="store_true", help="the job over HTTP (the emulator)")
    parser.add_argument("--job", nargs=4, help=argparse.SUPPRESS)  # SOURCE RECORDS OUTPUT URL
    args = parser.parse_args()
    if args.job is not None:
        source, records, output, url = args.job
        job(Path(source), int(records), Path(output), url)
        return
    if args.large <= args.small or args.small < 1:
        parser.error("--large must be more than --small, and --small at least 1")
    if shutil.which("valgrind") is None:
        parser.exit(2, "record_cost.py: valgrind is not installed; apt install valgrind\n")
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="record-cost-")))
        url = f"{stack.enter_context(emulator())[0]}/v1" if args.http else ""
        small = instructions(args.small, work, args.pythonpath, url)
        large = instructions(args.large, work, args.pythonpath, url)
    per_record = (large - small) / (args.large - args.small)
    tree = args.pythonpath or str(ROOT)
    print(f"tree: {tree}; provider: {'the emulator over HTTP' if args.http else 'in-process sim'}")
    print(f"instructions: {small:,} for {args.small:,} records, {large:,} for {args.large:,}")
    print(f"per record: {per_record:,.0f} instructions (every thread; start-up excluded)")


if __name__ == "__main__":
    main()
