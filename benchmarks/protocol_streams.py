"""What streaming costs the client per output token on each wire protocol: OpenAI's
and Azure's chunks, Anthropic's and Gemini's server-sent events, Bedrock's event-stream
frames (decoded by botocore), through ``Engine.run`` against the instant emulator.

Starts ``fanout sim-server`` (zero latency, no limits) pinned to the last CPU, pins this
process (the client) to CPU 0, and runs, per protocol and round, N workers calling
``Engine.run`` of one summary step (a ~15-token reply, traced to Parquet) twice: not
streamed, then with ``stream=True`` (the emulator sends a piece of text per event). Prints
each protocol's client CPU µs per output token, not streamed and streamed (best round of
each), the difference (what streaming costs a token) and the emulator's CPU share (it
must stay under one core, or it is what the figures measure).

Run: python benchmarks/protocol_streams.py [--seconds 3] [--concurrency 64] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from batch_1m import machine
from overhead import TEXTS, Row, emulator, measure, pin, summary, workers
from protocols import PROTOCOLS, config

from fanout import Engine
from fanout.cli._loop import run as cli_run


async def summary_loop(
    protocol: str, root: str, seconds: float, n: int, traces: Path, *, stream: bool,
    tokens: list[int],
) -> int:  # fmt: skip
    """``Engine.run`` of the summary step on ``protocol``; output tokens and replies
    counted into ``tokens``."""
    dag = summary(stream=stream)
    async with Engine(config(protocol, root, n), traces=traces) as engine:

        async def one(w: int, i: int) -> None:
            result = await engine.run(dag, {"text": f"{TEXTS[(w + i) % 3]} #{w}-{i}"})
            assert result.ok, result.error_message
            tokens[0] += result.usage.output_tokens
            tokens[1] += 1

        return await workers(n, seconds, one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per timed loop")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("FANOUT_TRACE_KEY", "benchmark-key")
    os.environ.update(
        BENCH_KEY="bench-key-0123456789",
        AWS_ACCESS_KEY_ID="AKIABENCHMARK0000000",
        AWS_SECRET_ACCESS_KEY="benchmark/secret/key/0123456789",
        AWS_EC2_METADATA_DISABLED="true",
    )
    modes = ("plain", "streamed")
    rows = {(p, m): Row(f"{p} {m}", [], [], []) for p in PROTOCOLS for m in modes}
    tokens = {key: [0, 0] for key in rows}
    with emulator() as (root, pid), tempfile.TemporaryDirectory() as tmp:
        pin(0)
        warm = Path(tmp) / "warm"
        cli_run(summary_loop("openai", root, 1.0, args.concurrency, warm, stream=True,
                             tokens=[0, 0]))  # fmt: skip
        for r in range(args.rounds):
            for protocol in PROTOCOLS:
                for mode in modes:
                    key = (protocol, mode)
                    traces = Path(tmp) / f"{protocol}-{mode}-{r}"
                    loop = summary_loop(protocol, root, args.seconds, args.concurrency, traces,
                                        stream=mode == "streamed", tokens=tokens[key])  # fmt: skip
                    measure(rows[key], pid, lambda: cli_run(loop))  # noqa: B023  # called at once
    print(f"machine: {machine()}")
    print(f"Engine.run of a summary step, traced; client on CPU 0, concurrency "
          f"{args.concurrency}, {args.rounds} round(s) of {args.seconds:g} s per mode")  # fmt: skip
    print(f"{'':11}{'tok/reply':>9}  {'plain µs/tok':>12}  {'streamed µs/tok':>15}  "
          f"{'+µs/tok':>8}  {'streamed/s':>10}  {'emulator cores':>14}")  # fmt: skip
    for protocol in PROTOCOLS:
        plain, streamed = rows[(protocol, "plain")], rows[(protocol, "streamed")]
        done, replies = tokens[(protocol, "streamed")]
        per_reply = done / max(1, replies)
        us_plain = min(plain.cpu_us) / per_reply
        us_stream = min(streamed.cpu_us) / per_reply
        cores = max(*plain.emulator_cores, *streamed.emulator_cores)
        print(f"{protocol:11}{per_reply:9.1f}  {us_plain:12.1f}  {us_stream:15.1f}  "
              f"{us_stream - us_plain:+8.1f}  {streamed.best():10,.0f}  {cores:14.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
