"""Calls tool callables: async ones on the loop, sync ones in a thread pool, with timeouts."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping

from fanout.errors import FanoutError, ToolError

__all__ = ["call_tool"]


async def call_tool(
    fn: Callable[..., object],
    args: tuple[object, ...],
    kwargs: Mapping[str, object],
    *,
    timeout_s: float | None,
    is_async: bool | None = None,
    inline: bool = False,
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
        awaitable = fn(*args, **kwargs) if is_async else asyncio.to_thread(fn, *args, **kwargs)
        if timeout_s is None:
            return await awaitable  # type: ignore[misc]  # fn is async here
        async with asyncio.timeout(timeout_s):
            return await awaitable  # type: ignore[misc]
    except TimeoutError:
        raise ToolError(f"tool {name!r} took longer than timeout_s={timeout_s}") from None
    except FanoutError:
        raise
    except Exception as exc:
        raise ToolError(f"tool {name!r} raised {type(exc).__name__}: {exc}") from exc
