"""Headers a call carries for its caller's tracing (a W3C ``traceparent``), set per task.

The run layer sets them around one attempt (``[traces] propagate = true``); an HTTP
provider adds them to that request. A context variable, so concurrent calls on one loop
each send their own, and providers keep their signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar

__all__ = ["CALL_HEADERS"]

CALL_HEADERS: ContextVar[Mapping[str, str] | None] = ContextVar("fanout_call_headers", default=None)
