"""The live export's exporter process: what it sends, what it counts, what it survives.

A real OTLP/HTTP receiver on loopback (protobuf decoded with opentelemetry-proto) and
real rows (``new_span``, as the executor makes them). The sink's process is a real
child process: it is killed, starved and left without a receiver here.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
from support_otlp import otlp_receiver

from fanout.config import TraceConfig
from fanout.trace import OtelSettings, OtelSink, otel_settings
from fanout.trace._otel_child import NICE
from fanout.trace._span import Span, new_span

SECRET = "sk-otlp-process-secret-0123456789"
ROOT = Path(__file__).resolve().parents[2]


def settings(endpoint: str, **changes: object) -> OtelSettings:
    found = otel_settings(TraceConfig(otlp=True, otlp_endpoint=endpoint), {})
    assert found is not None
    return replace(found, headers={"x-api-key": SECRET}, **changes)  # type: ignore[arg-type]


def rows(count: int, trace: int = 1) -> list[Span]:
    """``count`` node rows of one trace (one span each: no waits)."""
    start = time.time()
    return [
        new_span(
            trace_id=f"{trace:032x}", span_id=f"{i + 1:016x}", parent_span_id=None,
            record_type="node", span_name=f"llm n{i}", job_id="job", dag_name="d",
            node_id=f"n{i}", start_time=start, end_time=start + 0.01, duration_ms=10.0,
        )
        for i in range(count)
    ]  # fmt: skip


def test_rows_go_out_from_a_process_of_their_own_with_this_processs_identity() -> None:
    with otlp_receiver() as rx:
        sink = OtelSink(settings(rx.url))
        assert sink.pid is not None and sink.pid != os.getpid()
        with open(f"/proc/{sink.pid}/cmdline", "rb") as cmdline:  # headers never on argv
            assert SECRET.encode() not in cmdline.read()
        for row in rows(300):
            sink.emit(row)
        assert sink.flush(10)
        assert nice(sink.pid) == nice(os.getpid()) + NICE  # below the job's priority
        assert len(rx.spans) == 300  # a flush waits for the export itself
        sink.close()
    assert sink.stats.exported == 300 and sink.stats.failed == 0 and sink.stats.dropped == 0
    assert {s["span_id"] for s in rx.spans} == {f"{i + 1:016x}" for i in range(300)}
    assert {s["resource"]["process.pid"] for s in rx.spans} == {os.getpid()}
    assert all(r["x-api-key"] == SECRET for r in rx.requests)
    assert "secret" not in repr(sink).lower() and SECRET not in repr(sink)


def test_a_full_queue_drops_and_counts_and_close_sends_the_rest() -> None:
    with otlp_receiver() as rx:
        # the hand-off thread does not wake before close: 10 rows fit, 40 do not
        sink = OtelSink(
            settings(rx.url, max_queue_size=10, schedule_delay_ms=600_000.0)
        )
        for row in rows(50):
            sink.emit(row)
        sink.close()
        assert len(rx.spans) == 10
    assert (sink.stats.exported, sink.stats.failed, sink.stats.dropped) == (10, 0, 40)
    sink.emit(rows(1)[0])  # after close: ignored, not an error
    assert sink.stats.exported == 10


def test_an_unreachable_collector_counts_failures_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with otlp_receiver() as rx:
        dead = rx.url  # a port nothing listens on once the receiver is gone
    sink = OtelSink(settings(dead, timeout_s=1.0))
    for row in rows(20):
        sink.emit(row)
    with caplog.at_level(logging.WARNING, logger="fanout.trace.otel"):
        sink.close()
    assert (sink.stats.exported, sink.stats.failed, sink.stats.dropped) == (0, 20, 0)
    assert "20 failed" in caplog.text
    assert SECRET not in caplog.text


def test_a_killed_exporter_process_costs_its_rows_not_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with otlp_receiver() as rx:
        sink = OtelSink(settings(rx.url, schedule_delay_ms=600_000.0))
        assert sink.pid is not None
        for row in rows(5):
            sink.emit(row)
        assert sink.flush(10) and len(rx.spans) == 5
        os.kill(sink.pid, signal.SIGKILL)
        for row in rows(7, trace=2):
            sink.emit(row)
        with caplog.at_level(logging.WARNING, logger="fanout.trace.otel"):
            assert not sink.flush(5)  # nobody to export: False, not an exception
            sink.close()
    assert sink.stats.dropped == 7
    assert "exporter process" in caplog.text


def test_rows_handed_on_are_exported_when_the_job_process_dies_without_closing() -> None:
    """A crash of the job loses no row the exporter process was given: it reads to the
    end of the pipe and exports, then exits."""
    script = textwrap.dedent(
        """
        import os, sys, time
        sys.path.insert(0, sys.argv[2])
        from test_otel_process import rows, settings
        from fanout.trace import OtelSink
        sink = OtelSink(settings(sys.argv[1], schedule_delay_ms=50.0))
        for row in rows(40):
            sink.emit(row)
        time.sleep(1.0)  # the hand-off thread has put them down the pipe
        print(sink.pid, flush=True)
        os._exit(3)  # no close, no atexit
        """
    )
    here = str(Path(__file__).parent)
    with otlp_receiver() as rx:
        done = subprocess.run(
            [sys.executable, "-c", script, rx.url, here],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": f"{here}{os.pathsep}{ROOT / 'tests'}"},
        )  # fmt: skip
        assert done.returncode == 3, done.stderr
        spans = rx.wait_for(40, timeout_s=20)
    assert len(spans) == 40
    child = int(done.stdout.split()[0])
    for _ in range(100):  # the orphaned exporter ends on its own
        if not running(child):
            break
        time.sleep(0.1)
    assert not running(child)


def nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def running(pid: int) -> bool:
    """``pid`` is a live process (not gone, not a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
