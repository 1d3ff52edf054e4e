"""What the gateway's per-call write of a virtual key's spend costs (``KeyStore.add_spend``).

Every call a virtual key makes adds its USD and tokens to the key's row in SQLite, in
one ``BEGIN IMMEDIATE`` transaction (WAL mode, ``synchronous=FULL``: the WAL is synced
at each commit), on a worker thread after the answer went out. Prints wall and CPU µs
a write, best of ``--rounds``, for:

  kept connection   the store as it is: each thread keeps its connection
  a connection each the store closed after every write (``store.close()``), so each write
                    opens a connection and, as the file's last one, its close checkpoints
                    the WAL: what a connection per operation cost

Run: python benchmarks/key_spend.py [--writes 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from batch_1m import machine

from fanout.store import KeyStore


def timed(store: KeyStore, key_id: str, writes: int, *, close: bool) -> tuple[float, float]:
    """Wall and CPU µs a write."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(writes):
        store.add_spend(key_id, 0.0, usd=0.0001, tokens=60)
        if close:
            store.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / writes * 1e6, cpu / writes * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = KeyStore(Path(tmp) / "keys.db")
        key, _ = store.create("bench")
        for _ in range(args.rounds):
            for label, close in (("kept connection", False), ("a connection each", True)):
                wall, cpu = timed(store, key.key_id, args.writes, close=close)
                was = best.get(label)
                best[label] = (wall, cpu) if was is None or cpu < was[1] else was
        spent = store.spent(key.key_id, 0.0)
    expected = 2 * args.rounds * args.writes
    assert spent[2] == expected, (spent, expected)  # every write counted
    print(f"machine: {machine()}")
    print(f"{args.writes} writes a round, best of {args.rounds}; {expected} counted")
    for label, (wall, cpu) in best.items():
        print(f"{label:18} {wall:7.0f} µs wall  {cpu:6.0f} µs CPU a write")
    kept, each = best["kept connection"][1], best["a connection each"][1]
    print(f"CPU a write: {each / kept:.1f}x less with the connection kept")


if __name__ == "__main__":
    main()
