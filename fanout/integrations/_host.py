"""``EngineHost``: one engine on a loop of its own, called from sync and async framework code."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, create_model

from fanout.config import Config, load_config
from fanout.dag import DAG, Tool
from fanout.errors import ConfigError, RunError
from fanout.run import Engine, RunResult
from fanout.types import Message, ToolCall, ToolSpec, Usage

__all__ = ["ChatReply", "EngineHost", "schema_tool"]

T = TypeVar("T")
_NODE = "chat"


@dataclass(frozen=True, slots=True)
class ChatReply:
    """One chat call's answer: text (or a validated ``output`` model), tool calls, spend."""

    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    parsed: BaseModel | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    request_id: str = ""
    model: str = ""


class EngineHost:
    """An :class:`Engine` on a background event loop: every integration calls through one.

    A framework calls from plain threads (LangChain's ``invoke``, Haystack's ``run``) and
    from event loops of its own (``ainvoke``); the engine's limiters and circuits belong to
    one loop, so the host runs them all on its own. ``engine``: an engine to host (it is
    closed with the host); else one from ``config`` (a TOML path or a :class:`Config`;
    ``None``: the simulated ``fast``/``smart`` default) with ``traces`` (a directory).
    Close it (``close()``, or ``with EngineHost(...)``) to write the trace out.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        config: str | Path | Config | None = None,
        traces: str | Path | None = None,
    ) -> None:
        if engine is not None and (config is not None or traces is not None):
            raise ConfigError("EngineHost: pass engine= or config=/traces=, not both")
        if engine is None:
            cfg = load_config(config) if isinstance(config, str | Path) else config
            engine = Engine(cfg, traces=traces)
        self.engine = engine
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fanout-engine-host", daemon=True
        )
        self._thread.start()
        self._dags: dict[tuple[object, ...], DAG] = {}
        self._closed = False

    # -- calling the engine -------------------------------------------------

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        if self._closed:
            coro.close()
            raise ConfigError("EngineHost is closed; build a new one")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the host's loop and wait for it (from any thread but the host's)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "EngineHost.call() from the host's own loop would wait for itself; "
                "use the async API (await host.acall(...), ainvoke, achat) there"
            )
        return self.submit(coro).result()

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the host's loop, from any event loop."""
        if threading.current_thread() is self._thread:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def run(self, dag: DAG, inputs: Mapping[str, object], **options: Any) -> RunResult:
        """:meth:`Engine.run` from synchronous code."""
        return self.call(self.engine.run(dag, inputs, **options))

    async def arun(self, dag: DAG, inputs: Mapping[str, object], **options: Any) -> RunResult:
        """:meth:`Engine.run` from any event loop."""
        return await self.acall(self.engine.run(dag, inputs, **options))

    # -- one chat call -------------------------------------------------------

    def chat_dag(
        self,
        model: str,
        *,
        tools: Sequence[ToolSpec] = (),
        output: type[BaseModel] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> DAG:
        """A one-node DAG sending its ``messages`` input to ``model`` (built once per shape)."""
        key = (model, tuple(json.dumps(t.to_wire(), sort_keys=True) for t in tools),
               output, max_tokens, temperature)  # fmt: skip
        dag = self._dags.get(key)
        if dag is None:
            dag = DAG(f"chat-{model}")
            messages = dag.input("messages")
            made = [Tool(spec, _AnyArgs, None) for spec in tools]
            dag.output(
                reply=dag.llm(
                    model, _messages, messages=messages, tools=made, output=output,
                    max_tokens=max_tokens, temperature=temperature, name=_NODE,
                )
            )  # fmt: skip
            self.engine.validate(dag)  # an unknown alias fails here, before any call
            if len(self._dags) >= 256:
                self._dags.clear()
            self._dags[key] = dag
        return dag

    async def achat(
        self, model: str, messages: list[Message], **options: Any
    ) -> ChatReply:
        """One chat call on ``model`` through the engine (limiter, budget, retries,
        fallbacks, trace); raises :class:`RunError` naming the cause if it failed."""
        budget = {k: options.pop(k) for k in ("budget_usd", "deadline_s") if k in options}
        dag = self.chat_dag(model, **options)
        result = await self.arun(dag, {"messages": messages}, **budget)
        return _reply(result, model)

    def chat(self, model: str, messages: list[Message], **options: Any) -> ChatReply:
        """:meth:`achat` from synchronous code."""
        return self.call(self.achat(model, messages, **options))

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Close the engine (the trace is written out) and stop the loop. Idempotent."""
        if self._closed:
            return
        try:
            self.call(self.engine.aclose())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> EngineHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EngineHost({self.engine!r})"


class _AnyArgs(BaseModel):
    """The arguments of a schema-only tool: the framework runs it, fanout never does."""

    model_config = ConfigDict(extra="allow")


def _messages(values: Mapping[str, object]) -> list[Message]:
    messages = values["messages"]
    assert isinstance(messages, list)
    return messages


def _reply(result: RunResult, model: str) -> ChatReply:
    node = result.nodes[_NODE]
    if not result.ok:
        raise RunError(
            f"fanout model {model!r}: the call ended {result.status} "
            f"({node.error_type or result.error_type}: "
            f"{node.error_message or result.error_message})"
        )
    value = result.outputs["reply"]
    calls: tuple[ToolCall, ...] = ()
    parsed = value if isinstance(value, BaseModel) else None
    if isinstance(value, list):
        calls, text = tuple(c for c in value if isinstance(c, ToolCall)), ""
    else:
        text = parsed.model_dump_json() if parsed is not None else str(value)
    return ChatReply(text, calls, parsed, node.usage, result.cost_usd, result.request_id, model)


def schema_tool(
    name: str,
    description: str,
    parameters: Mapping[str, object],
    fn: Callable[..., Awaitable[object]],
) -> Tool:
    """A fanout :class:`Tool` from a JSON Schema of its arguments and an async callable
    taking them by keyword (the model's arguments are passed as they came, each checked
    only for presence: the framework's own tool validates them)."""
    props = parameters.get("properties", {})
    if not isinstance(props, dict):
        raise ConfigError(f"tool {name!r}: its parameters schema has no 'properties' object")
    listed = parameters.get("required", ())
    required = set(listed) if isinstance(listed, list | tuple) else set()
    fields: dict[str, Any] = {p: (Any, ... if p in required else None) for p in props}
    args_model: type[BaseModel] = create_model(
        f"{name}_args", __config__=ConfigDict(extra="forbid"), **fields
    )
    spec = ToolSpec(name=name, description=description, parameters=dict(parameters))

    async def call(**kwargs: object) -> object:
        # an optional argument the model left out arrives as None: leave it out
        return await fn(**{k: v for k, v in kwargs.items() if v is not None})

    call.__name__ = name
    return Tool(spec, args_model, call)
