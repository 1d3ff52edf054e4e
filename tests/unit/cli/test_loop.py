"""The loop `fanout run` runs on: uvloop when installed, asyncio's on request."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from fanout.cli._loop import run


async def loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FANOUT_LOOP", raising=False)
    assert run(loop_type()) is uvloop.Loop


def test_fanout_loop_asyncio_keeps_asyncios_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_LOOP", "asyncio")
    assert not issubclass(run(loop_type()), uvloop.Loop)
