"""The emulator's wire: bare ASGI messages in and out, and chat requests read from JSON.

Starlette's Request and Response cost most of a call at the emulator's speed, so the
completions route speaks ASGI directly through these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import orjson
from starlette.types import Receive, Scope, Send

from fanout.types import ChatRequest, Message, ToolSpec

__all__ = ["bearer", "chat_request", "read_body", "respond", "respond_error", "unless_gone"]


async def unless_gone(receive: Receive, work: Awaitable[object]) -> bool:
    """Await ``work``; ``False`` (and ``work`` cancelled) if the client disconnected first.

    The body has been read, so the server's next ASGI message is ``http.disconnect``
    when the connection closes (and nothing before that).
    """
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    return task.done() and not task.cancelled()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    return body


def bearer(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            token: str = value.decode("latin-1").removeprefix("Bearer ")
            return token.strip()
    return ""


async def respond(
    send: Send, status: int, body: bytes, headers: dict[str, str], *, length: int | None = None
) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-type", b"application/json"))
    raw.append((b"content-length", str(len(body) if length is None else length).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def respond_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    kind: str | None = None,
) -> None:
    body = orjson.dumps({"error": {"message": message, "type": kind or code, "code": code}})
    await respond(send, status, body, headers or {})


def chat_request(body: dict[str, object]) -> ChatRequest:
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    tools = []
    for tool in body.get("tools") or ():  # type: ignore[attr-defined]
        fn = tool["function"]
        tools.append(ToolSpec(fn["name"], fn.get("description", ""), fn.get("parameters", {})))
    schema = None
    name = "output"
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt["json_schema"]["schema"]
        name = fmt["json_schema"].get("name", "output")
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 256
    return ChatRequest(
        model=str(body["model"]),
        messages=[_message(m) for m in messages],
        max_tokens=int(max_tokens),  # type: ignore[call-overload]
        temperature=float(body.get("temperature") or 0.0),  # type: ignore[arg-type]
        tools=tuple(tools),
        response_schema=schema,
        response_schema_name=name,
        stream=bool(body.get("stream")),
    )


def _message(raw: object) -> Message:
    if not isinstance(raw, dict) or raw.get("role") not in ("system", "user", "assistant", "tool"):
        raise ValueError("each message needs a role of system, user, assistant or tool")
    return raw  # type: ignore[return-value]  # checked above; the rest is passed through
