"""``ChatFanout``: a fanout model alias as a LangChain ``BaseChatModel``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict

from fanout.integrations._host import ChatReply, EngineHost
from fanout.types import Message, ToolSpec

__all__ = ["ChatFanout"]


class ChatFanout(BaseChatModel):
    """A LangChain chat model whose calls run on fanout model alias ``model``, in process.

    Every call goes through ``host``'s engine: its limiter (shared with every other
    caller of the host), retries and fallbacks, the call's ``budget_usd`` and the
    trace. ``bind_tools`` offers tools (the reply carries the calls; LangChain runs
    them); ``with_structured_output(PydanticModel)`` uses fanout's validated output (the
    reply is checked against the model and sent back with the error when it is not)::

        host = EngineHost(config="fanout.toml", traces="traces/")
        llm = ChatFanout(model="fast", host=host)
        llm.invoke("Sentiment of: great product").content
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str
    host: EngineHost
    max_tokens: int = 256
    temperature: float = 0.0
    budget_usd: float | None = None

    @property
    def _llm_type(self) -> str:
        return "fanout"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens,
                "temperature": self.temperature}  # fmt: skip

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        if stop:
            raise ValueError(
                "ChatFanout does not support stop sequences; drop stop= (fanout sends the "
                "whole reply and its finish reason)"
            )
        specs = tuple(_spec(t) for t in kwargs.pop("tools", ()))
        options: dict[str, Any] = {
            "tools": specs,
            "output": kwargs.pop("fanout_output", None),
            "max_tokens": kwargs.pop("max_tokens", self.max_tokens),
            "temperature": kwargs.pop("temperature", self.temperature),
        }
        if self.budget_usd is not None:
            options["budget_usd"] = self.budget_usd
        kwargs.pop("tool_choice", None)  # the model decides; fanout has no forcing
        kwargs.pop("ls_structured_output_format", None)
        if kwargs:
            raise ValueError(f"ChatFanout: unsupported arguments {sorted(kwargs)}")
        return options

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = self._options(stop, kwargs)
        return _result(self.host.chat(self.model, _wire(messages), **options))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = self._options(stop, kwargs)
        return _result(await self.host.achat(self.model, _wire(messages), **options))

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        """This model, offering ``tools`` (any form LangChain converts to a tool schema)."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        return cast(Runnable[Any, AIMessage], self.bind(tools=formatted, **kwargs))

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[Any, Any]:
        """A pydantic ``schema``: fanout's validated output (with validation retries);
        anything else (a JSON Schema, a TypedDict, ``include_raw=True``): LangChain's
        tool-calling way, over :meth:`bind_tools`."""
        if include_raw or not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        kwargs.pop("method", None)
        kwargs.pop("strict", None)
        if kwargs:
            raise ValueError(f"with_structured_output: unsupported arguments {sorted(kwargs)}")
        model = schema

        def parse(message: AIMessage) -> BaseModel:
            return model.model_validate_json(message.text)

        return self.bind(fanout_output=model) | RunnableLambda(parse)


def _spec(tool: dict[str, Any]) -> ToolSpec:
    function = tool.get("function", tool)
    return ToolSpec(
        name=function["name"],
        description=function.get("description", ""),
        parameters=function.get("parameters", {"type": "object", "properties": {}}),
    )


def _wire(messages: list[BaseMessage]) -> list[Message]:
    """LangChain messages as OpenAI-style chat messages, text content only."""
    wire: list[dict[str, Any]] = convert_to_openai_messages(messages)
    for message in wire:
        content = message.get("content")
        if isinstance(content, list):  # content blocks: their text
            message["content"] = "".join(
                b.get("text", "") if isinstance(b, dict) else str(b) for b in content
            )
    return cast(list[Message], wire)


def _result(reply: ChatReply) -> ChatResult:
    usage = reply.usage
    message = AIMessage(
        content=reply.content,
        tool_calls=[
            {"name": c.name, "args": c.parsed_arguments(), "id": c.id, "type": "tool_call"}
            for c in reply.tool_calls
        ],
        usage_metadata={
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        },
        response_metadata={
            "model_name": reply.model,
            "fanout_request_id": reply.request_id,
            "cost_usd": reply.cost_usd,
        },
    )
    return ChatResult(generations=[ChatGeneration(message=message)])
