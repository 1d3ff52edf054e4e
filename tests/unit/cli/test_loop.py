"""The loop `fanout run` runs on: uvloop when installed, asyncio's on request."""

from __future__ import annotations

import asyncio
import gc

import pytest
import uvloop

from fanout.cli._loop import GC_THRESHOLD, run


async def loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FANOUT_LOOP", raising=False)
    assert run(loop_type()) is uvloop.Loop


def test_fanout_loop_asyncio_keeps_asyncios_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_LOOP", "asyncio")
    assert not issubclass(run(loop_type()), uvloop.Loop)


async def collector() -> tuple[int, int]:
    return gc.get_threshold()[0], gc.get_freeze_count()


def test_collector_tuned_while_running_and_restored_after() -> None:
    before = gc.get_threshold()
    threshold, frozen = run(collector())
    assert threshold == max(before[0], GC_THRESHOLD)
    assert frozen > 0  # the start-up heap, out of the collector's sight
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_programs_own_collector_settings_are_kept() -> None:
    before = gc.get_threshold()
    gc.set_threshold(0)  # collection off: the program's choice
    try:
        assert run(collector())[0] == 0
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)
