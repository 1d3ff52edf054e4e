"""The event loop a command runs on: uvloop when it is installed, else asyncio's; and the
garbage collector's settings while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["GC_THRESHOLD", "run"]

# The youngest generation's threshold while a command runs (CPython's default: 700).
# A job of 200 records in flight holds ~20,000 container objects (frames, tasks,
# futures, requests, replies, trace rows) that are born and die in bursts; at 700 the
# collector ran every few records, promoted the window of records in flight to the
# old generation and swept the whole heap over and over: ~120 µs of a record's
# ~420 µs of CPU against the emulator (benchmarks/overhead.py). The per-record path
# makes no reference cycles, so collections find next to nothing.
GC_THRESHOLD = 50_000


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on uvloop if it can be imported, with the collector tuned
    for high fan-out (:func:`_collector_tuned`)."""
    with _collector_tuned():
        if os.environ.get("FANOUT_LOOP") != "asyncio":
            try:
                import uvloop
            except ImportError:
                pass
            else:
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    return runner.run(main)
        return asyncio.run(main)


@contextlib.contextmanager
def _collector_tuned() -> Iterator[None]:
    """What start-up built (modules, config, pydantic's schemas) frozen out of the
    collector's sight, and the youngest generation's threshold raised to
    :data:`GC_THRESHOLD`; both as they were again afterwards. Cyclic garbage is still
    collected, just less often. A program that froze objects or set a threshold of
    its own (0: collection off) keeps them."""
    thresholds = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.collect()  # freeze no garbage
        gc.freeze()
    if 0 < thresholds[0] < GC_THRESHOLD:
        gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if freeze:
            gc.unfreeze()
