"""What the service accepts: a request body of bounded size, inputs of bounded shape.

The body limit is an ASGI middleware in front of every route: a ``Content-Length`` over
the limit is answered 413 before a byte of the body is read, and a body streamed
without one is cut off as soon as it passes the limit (a 50 MB upload never reaches
memory whole, nor a provider). Inputs are then checked for depth and numbers a JSON
value can hold without surprise (:func:`check_shape`).
"""

from __future__ import annotations

import math

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_DEPTH",
    "BodyLimit",
    "ShapeError",
    "check_shape",
    "parse_error",
]

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 32
_MAX_INT = 2**63  # beyond 64 bits a number means something else in most JSON readers


def _too_large(limit: int, size: str) -> str:
    return (
        f"the request body ({size}) is larger than this service accepts ({limit:,} bytes); "
        "send less (or start the service with a larger --max-body-bytes)"
    )


class BodyLimit:
    """Answers 413 for a request body larger than ``max_bytes`` (the error body of every
    other 4xx: ``{"error": {"type": "body_too_large", ...}}``)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            message = _too_large(limit, f"{int(declared):,} bytes")
            body = {"error": {"type": "body_too_large", "message": message, "fields": []}}
            await JSONResponse(body, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # FastAPI passes an HTTPException from reading the body on
                    raise HTTPException(413, _too_large(limit, f"over {limit:,} bytes so far"))
            return message

        await self.app(scope, limited, send)


class ShapeError(ValueError):
    """An input nests too deep or holds a number out of range: a 400 naming it."""


def check_shape(value: object, where: str, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise :class:`ShapeError` if ``value`` nests deeper than ``max_depth`` or holds a
    number that is not finite or an integer beyond 64 bits."""
    stack: list[tuple[object, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                raise ShapeError(f"{path}: nests deeper than {max_depth} levels; flatten it")
            children = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((child, f"{path}.{key}", depth + 1) for key, child in children)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int) and not -_MAX_INT <= item < _MAX_INT:
            raise ShapeError(f"{path}: an integer beyond 64 bits; send it as a string")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ShapeError(f"{path}: not a finite number (JSON has no infinity)")


def parse_error(exc: BaseException | None) -> str | None:
    """The clear reason for a body the JSON parser gave up on, if it is a limit."""
    if isinstance(exc, RecursionError):
        return "the request body nests too deep to parse; flatten it"
    if isinstance(exc, ValueError) and "digits" in str(exc):
        return "the request body holds a number with too many digits; send it as a string"
    return None
