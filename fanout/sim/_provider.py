"""``SimProvider``: an in-process provider with a latency model, deterministic replies and faults.

Replies depend only on the request: sentiment prompts get positive/negative/neutral,
"summar..." prompts a summary, others an echo; a ``response_schema`` gets a JSON
document valid against it; offered tools are called once, then answered.

Markers in the last user message steer single requests (tests use them):
``[sim:fail]`` always 500; ``[sim:fail-once]`` 500 on the first attempt only;
``[sim:invalid-once]`` invalid JSON on the first attempt; ``[sim:latency=NNN]``
NNN ms base latency; ``[sim:timeout]`` hangs until the timeout. "Attempt" counts how
often this provider saw the same request, so retries and fallbacks can succeed.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Iterable

from fanout.clock import Clock, SystemClock
from fanout.config import SimProviderConfig
from fanout.errors import ProviderHTTPError, ProviderTimeout
from fanout.sim._schema_gen import generate
from fanout.sim._text import reply_text, token_count
from fanout.types import ChatRequest, ChatResponse, Message, ToolCall, ToolSpec, Usage

__all__ = ["SimProvider", "sim_usage"]

_LATENCY = re.compile(r"\[sim:latency=(\d+(?:\.\d+)?)\]")
_MAX_REMEMBERED = 100_000


def sim_usage(messages: Iterable[Message], output_tokens: int) -> Usage:
    """Token counts as the simulated provider reports them (near, not equal to, the estimate)."""
    count = 0
    for message in messages:
        count += 3 + token_count(message.get("content") or "")
    return Usage(count, output_tokens)


class SimProvider:
    """A :class:`fanout.providers.Provider` that simulates a model offline."""

    def __init__(
        self,
        name: str = "sim",
        *,
        latency_ms: float = 200.0,
        latency_per_token_ms: float = 0.0,
        jitter_sigma: float = 0.25,
        error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        invalid_json_rate: float = 0.0,
        seed: int = 0,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self.latency_ms = latency_ms
        self.latency_per_token_ms = latency_per_token_ms
        self.jitter_sigma = jitter_sigma
        self.error_rate = error_rate
        self.timeout_rate = timeout_rate
        self.invalid_json_rate = invalid_json_rate
        self.seed = seed
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.calls = 0
        self.calls_by_model: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._seen: dict[int, int] = {}

    @classmethod
    def from_config(
        cls, name: str, cfg: SimProviderConfig, *, clock: Clock | None = None
    ) -> SimProvider:
        return cls(
            name,
            latency_ms=cfg.latency_ms,
            latency_per_token_ms=cfg.latency_per_token_ms,
            jitter_sigma=cfg.jitter_sigma,
            error_rate=cfg.error_rate,
            timeout_rate=cfg.timeout_rate,
            seed=cfg.seed,
            clock=clock,
        )

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse:
        self.calls += 1
        self.calls_by_model[request.model] = self.calls_by_model.get(request.model, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._complete(request, timeout_s)
        finally:
            self.in_flight -= 1

    async def _complete(self, request: ChatRequest, timeout_s: float | None) -> ChatResponse:
        prompt = _last_user(request.messages)
        marked = "[sim:" in prompt
        faults = marked or self.error_rate or self.timeout_rate or self.invalid_json_rate
        attempt, draw = 0, 1.0
        if faults or self.jitter_sigma:
            key = zlib.crc32(f"{request.model}\x00{len(request.messages)}\x00{prompt}".encode())
            if faults:
                attempt = self._seen.get(key, 0)
                if len(self._seen) >= _MAX_REMEMBERED:
                    self._seen.clear()
                self._seen[key] = attempt + 1
            rng = random.Random(key ^ (attempt * 0x9E3779B1) ^ self.seed)
            draw = rng.random()
        else:
            rng = None
        response = self._reply(request, prompt, marked, attempt, draw)
        latency_ms = self.latency_ms
        if marked:
            found = _LATENCY.search(prompt)
            if found:
                latency_ms = float(found.group(1))
        latency_s = (latency_ms + self.latency_per_token_ms * response.usage.output_tokens) / 1000
        if rng is not None and self.jitter_sigma and latency_s:
            latency_s *= rng.lognormvariate(0.0, self.jitter_sigma)
        hang = (marked and "[sim:timeout]" in prompt) or draw < self.timeout_rate
        if hang or (timeout_s is not None and latency_s > timeout_s):
            await self.clock.sleep(timeout_s if timeout_s is not None else 3600.0)
            raise ProviderTimeout(f"{self.name}: no answer within {timeout_s}s", provider=self.name)
        if latency_s > 0:
            await self.clock.sleep(latency_s)
        fail = draw < self.timeout_rate + self.error_rate and draw >= self.timeout_rate
        if marked and ("[sim:fail]" in prompt or ("[sim:fail-once]" in prompt and attempt == 0)):
            fail = True
        if fail:
            raise ProviderHTTPError(
                f"{self.name}: injected server error", provider=self.name, status_code=500
            )
        return response

    def _reply(
        self, request: ChatRequest, prompt: str, marked: bool, attempt: int, draw: float
    ) -> ChatResponse:
        if request.tools and not _answered_tools(request.messages):
            call = _tool_call(request.tools, prompt)
            return ChatResponse(
                content=None,
                usage=sim_usage(request.messages, token_count(call.arguments) + 5),
                finish_reason="tool_calls",
                tool_calls=(call,),
                model=request.model,
            )
        if request.response_schema is not None:
            invalid = (marked and "[sim:invalid-once]" in prompt and attempt == 0) or (
                1.0 - draw < self.invalid_json_rate
            )
            rng = random.Random(zlib.crc32(prompt.encode()) ^ self.seed)
            value = generate(request.response_schema, rng, pick_text=prompt)
            if invalid and isinstance(value, dict) and value:
                value.pop(next(iter(value)))  # drop a (required) field
            elif invalid:
                value = {"unexpected": True}
            text = json.dumps(value)
            return ChatResponse(
                content=text,
                usage=sim_usage(request.messages, token_count(text)),
                model=request.model,
            )
        text = _tool_context(request.messages) or reply_text(prompt)
        output_tokens = token_count(text)
        finish = "stop"
        if output_tokens > request.max_tokens:
            text, output_tokens, finish = (
                text[: request.max_tokens * 4],
                request.max_tokens,
                "length",
            )
        return ChatResponse(
            content=text,
            usage=sim_usage(request.messages, output_tokens),
            finish_reason=finish,
            model=request.model,
        )

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"SimProvider({self.name!r}, latency_ms={self.latency_ms}, calls={self.calls})"


def _last_user(messages: list[Message]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return message.get("content") or ""
    return ""


def _answered_tools(messages: list[Message]) -> bool:
    """Has a tool answered since the last user message?"""
    for message in reversed(messages):
        if message["role"] == "tool":
            return True
        if message["role"] == "user":
            return False
    return False


def _tool_context(messages: list[Message]) -> str:
    if not messages or messages[-1]["role"] != "tool":
        return ""
    results = [m.get("content") or "" for m in messages if m["role"] == "tool"]
    return "sim reply: based on the tools: " + "; ".join(r[:80] for r in results)


def _tool_call(tools: tuple[ToolSpec, ...], prompt: str) -> ToolCall:
    chosen = next((t for t in tools if t.name in prompt), tools[0])
    rng = random.Random(zlib.crc32(f"{chosen.name}\x00{prompt}".encode()))
    args = generate(chosen.parameters, rng, pick_text=prompt)
    return ToolCall(
        id=f"call_{rng.getrandbits(32):08x}", name=chosen.name, arguments=json.dumps(args)
    )
