"""Calls tool callables: async ones on the loop, sync ones in a thread pool, with timeouts."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping

from fanout.errors import FanoutError, ToolError

__all__ = ["CpuRunner", "call_tool"]

CpuRunner = Callable[
    [Callable[..., object], tuple[object, ...], Mapping[str, object], float], Awaitable[object]
]
"""Runs a CPU-bound tool elsewhere: ``runner(fn, args, kwargs, num_cpus)`` (the Ray
backend sends it to a Ray task). Without one, CPU-bound tools run in a thread."""


async def call_tool(
    fn: Callable[..., object],
    args: tuple[object, ...],
    kwargs: Mapping[str, object],
    *,
    timeout_s: float | None,
    is_async: bool | None = None,
    inline: bool = False,
    cpu_runner: CpuRunner | None = None,
    num_cpus: float = 1.0,
) -> object:
    """``fn(*args, **kwargs)`` without blocking the loop; its errors become ``ToolError``.

    A sync callable runs in the default thread pool (a thread cannot be cancelled:
    on timeout or cancellation its result is dropped when it finishes).
    """
    name = getattr(fn, "__name__", repr(fn))
    if is_async is None:
        is_async = inspect.iscoroutinefunction(fn)
    try:
        if inline and not is_async:
            return fn(*args, **kwargs)
        if cpu_runner is not None:
            awaitable: Awaitable[object] = cpu_runner(fn, args, kwargs, num_cpus)
        elif is_async:
            awaitable = fn(*args, **kwargs)  # type: ignore[assignment]  # async: a coroutine
        else:
            awaitable = asyncio.to_thread(fn, *args, **kwargs)
        if timeout_s is None:
            return await awaitable
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except TimeoutError:
        raise ToolError(f"tool {name!r} took longer than timeout_s={timeout_s}") from None
    except FanoutError:
        raise
    except Exception as exc:
        raise ToolError(f"tool {name!r} raised {type(exc).__name__}: {exc}") from exc
