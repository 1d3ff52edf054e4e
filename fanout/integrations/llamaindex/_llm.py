"""``FanoutLLM``: a fanout model alias as a LlamaIndex ``CustomLLM``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import ConfigDict, Field

from fanout.integrations._host import ChatReply, EngineHost
from fanout.types import Message

__all__ = ["FanoutLLM"]

_ROLES: dict[MessageRole, Literal["system", "user", "assistant", "tool"]] = {
    MessageRole.SYSTEM: "system", MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant", MessageRole.TOOL: "tool",
}


class FanoutLLM(CustomLLM):
    """A LlamaIndex LLM whose calls run on fanout model alias ``model`` through ``host``'s
    engine (limiter, retries, fallbacks, ``budget_usd`` per call, trace)::

        llm = FanoutLLM(model="fast", host=EngineHost(config="fanout.toml"))
        index.as_query_engine(llm=llm).query("...")

    Streaming yields the whole reply as one chunk (fanout returns whole replies).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str = Field(description="the fanout model alias")
    host: EngineHost = Field(exclude=True)
    max_tokens: int = 256
    temperature: float = 0.0
    context_window: int = 8192
    budget_usd: float | None = None

    @classmethod
    def class_name(cls) -> str:
        return "FanoutLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_tokens,
            is_chat_model=True,
            model_name=self.model,
        )

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.budget_usd is not None:
            options["budget_usd"] = self.budget_usd
        return options

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return _chat(self.host.chat(self.model, _wire(messages), **self._options()))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return _chat(await self.host.achat(self.model, _wire(messages), **self._options()))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        reply = self.host.chat(self.model, [{"role": "user", "content": prompt}], **self._options())
        return _completion(reply)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        messages: list[Message] = [{"role": "user", "content": prompt}]
        return _completion(await self.host.achat(self.model, messages, **self._options()))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        response = self.complete(prompt, formatted=formatted)
        response.delta = response.text
        yield response

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        response = self.chat(messages)
        response.delta = response.message.content or ""
        yield response

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        response = await self.acomplete(prompt, formatted=formatted)
        response.delta = response.text

        async def one() -> CompletionResponseAsyncGen:
            yield response

        return one()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        response = await self.achat(messages)
        response.delta = response.message.content or ""

        async def one() -> ChatResponseAsyncGen:
            yield response

        return one()


def _wire(messages: Sequence[ChatMessage]) -> list[Message]:
    return [
        {"role": _ROLES.get(m.role, "user"), "content": m.content or ""}
        for m in messages
    ]


def _meta(reply: ChatReply) -> dict[str, Any]:
    usage = reply.usage
    return {"fanout_request_id": reply.request_id, "cost_usd": reply.cost_usd,
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens}  # fmt: skip


def _chat(reply: ChatReply) -> ChatResponse:
    message = ChatMessage(role=MessageRole.ASSISTANT, content=reply.content)
    return ChatResponse(message=message, additional_kwargs=_meta(reply))


def _completion(reply: ChatReply) -> CompletionResponse:
    return CompletionResponse(text=reply.content, additional_kwargs=_meta(reply))
