"""Shared fixtures for unit tests: an engine on the simulated provider and a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support import sim_config

from fanout import Engine
from fanout.sim import FakeClock


@pytest.fixture
async def clock() -> AsyncIterator[FakeClock]:
    fake = FakeClock(autojump=True)
    yield fake
    await fake.aclose()


@pytest.fixture
async def engine(clock: FakeClock) -> AsyncIterator[Engine]:
    """Sim provider with 100 ms latency on a fake clock: time-dependent tests run instantly."""
    async with Engine(sim_config(100.0), clock=clock) as eng:
        yield eng
