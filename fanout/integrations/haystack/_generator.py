"""``FanoutGenerator`` (a Haystack generator component) and Haystack components as tools."""

from __future__ import annotations

import json
from typing import Any

from haystack import component
from haystack.core.component import Component
from haystack.tools import ComponentTool

from fanout.dag import Tool
from fanout.integrations._host import ChatReply, EngineHost, schema_tool
from fanout.types import Message

__all__ = ["FanoutGenerator", "component_tool"]


@component
class FanoutGenerator:
    """Generates text with fanout model alias ``model``, in process, through ``host``.

    ``system_prompt`` goes before every prompt; ``budget_usd`` caps each call. The
    output is Haystack's generator shape: ``replies`` (one string) and ``meta`` (the
    model, usage, cost and fanout's request id, which is the call's trace id)."""

    def __init__(
        self,
        model: str,
        host: EngineHost,
        *,
        system_prompt: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        budget_usd: float | None = None,
    ) -> None:
        self.model = model
        self.host = host
        self.system_prompt = system_prompt
        self.options: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
        if budget_usd is not None:
            self.options["budget_usd"] = budget_usd
        host.chat_dag(model, max_tokens=max_tokens, temperature=temperature)  # checks the alias

    def _messages(self, prompt: str) -> list[Message]:
        messages: list[Message] = [{"role": "user", "content": prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    @component.output_types(replies=list[str], meta=list[dict[str, Any]])
    def run(self, prompt: str) -> dict[str, Any]:
        return _output(self.host.chat(self.model, self._messages(prompt), **self.options))

    @component.output_types(replies=list[str], meta=list[dict[str, Any]])
    async def run_async(self, prompt: str) -> dict[str, Any]:
        reply = await self.host.achat(self.model, self._messages(prompt), **self.options)
        return _output(reply)


def _output(reply: ChatReply) -> dict[str, Any]:
    usage = reply.usage
    meta = {
        "model": reply.model,
        "usage": {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                  "total_tokens": usage.total_tokens},
        "cost_usd": reply.cost_usd,
        "fanout_request_id": reply.request_id,
    }  # fmt: skip
    return {"replies": [reply.content], "meta": [meta]}


def component_tool(
    component: Component, *, name: str | None = None, description: str | None = None
) -> Tool:
    """``component`` as a fanout tool: its schema is Haystack's ``ComponentTool``'s (from
    the component's inputs); the model's call runs the component, its outputs as JSON."""
    made = ComponentTool(component=component, name=name, description=description)

    async def run(**kwargs: object) -> str:
        result = await made.invoke_async(**kwargs)
        return result if isinstance(result, str) else json.dumps(result, default=_plain)

    return schema_tool(made.name, made.description, made.parameters, run)


def _plain(value: object) -> object:
    """A Haystack dataclass (a Document) as JSON: its ``to_dict()``, else its text."""
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else str(value)
