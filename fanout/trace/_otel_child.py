"""The exporter process (``python -m fanout.trace._otel_child``): rows from stdin to OTLP.

Its parent is :class:`fanout.trace._otel_process.ExporterProcess`, which says what the
frames are. Not imported by :mod:`fanout.trace`, so that ``-m`` runs it fresh.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from typing import Any

from fanout.trace._otel_process import pickled, read_frame, write_frame

__all__ = ["NICE", "main"]

NICE = 5  # a nice-5 process gets a quarter of a core that a nice-0 one keeps busy


def main() -> None:
    """The child: export the rows that come down stdin until ``close`` or EOF."""
    from fanout.trace._otel_exporters import build_exporter
    from fanout.trace._span import new_span

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
    with contextlib.suppress(AttributeError, OSError):
        # below the job's priority: on a busy machine the job's work (and a local
        # model server's) comes first, and the queue takes up the lag
        os.nice(NICE)
    logging.basicConfig(level=logging.WARNING, format="fanout otel exporter: %(message)s")
    inp, out = sys.stdin.fileno(), os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the frames
    start = read_frame(inp, None)
    if start is None or start[0] != "start":
        return
    exporter = build_exporter(start[1], start[2])
    batch = start[1].max_export_batch_size
    taken, started = 0, time.process_time()  # the export's CPU, not the imports'

    def stats() -> tuple[Any, ...]:
        return ("stats", exporter.exported, exporter.failed, time.process_time() - started, taken)

    try:
        while (message := read_frame(inp, None)) is not None:
            if message[0] == "rows":
                rows = [new_span(**values) for values in message[1]]
                taken += len(rows)
                for i in range(0, len(rows), batch):
                    exporter.export(rows[i : i + batch])
            elif message[0] == "flush":
                write_frame(out, pickled(stats()))
            elif message[0] == "close":
                write_frame(out, pickled(stats()))
                break
    finally:
        exporter.shutdown()


if __name__ == "__main__":
    main()
