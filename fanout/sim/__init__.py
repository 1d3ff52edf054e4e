"""Fakes for tests, benchmarks, demos and the CLI: a fake clock, simulated and scripted providers.

The HTTP emulator lives in ``fanout.sim.server`` (imported on demand: it needs uvicorn).
"""

from fanout.sim._clock import FakeClock
from fanout.sim._function import FunctionProvider
from fanout.sim._provider import SimProvider

__all__ = ["FakeClock", "FunctionProvider", "SimProvider"]
