"""``SimProvider``: an in-process provider with a latency model, deterministic replies and faults.

Replies depend only on the request (model, messages, ``max_tokens``, tools,
schema) and the provider's seed:

- a prompt mentioning "sentiment" gets ``positive``/``negative``/``neutral`` by
  keywords; one asking "easy or hard" gets ``hard`` (a subject over 25 words or
  with several questions) or ``easy``; one asking to "summar..." gets
  ``Summary: `` and its first words;
  anything else ``sim reply: `` and its first words. A reply longer than
  ``max_tokens`` is cut, with finish reason ``length``;
- a ``response_schema`` gets a JSON document valid against it;
- offered tools get one call (to the tool named in the prompt, else the first)
  until a tool has answered; then the reply quotes the tools' results
  (``Based on <tool>: <result>; ...``). A ``[sim:tools=...]`` marker scripts the
  calls instead, turn by turn (below).

Latency is ``(latency_ms + latency_per_token_ms * output_tokens)`` times a
lognormal jitter fixed per request, slept on the injected clock (not at all
when it is zero); ``tail_rate`` of attempts take ``tail_latency_ms`` more (a heavy
tail, drawn per attempt: a duplicate of a slow call is usually fast). ``error_rate``,
``timeout_rate`` and ``invalid_json_rate`` are drawn per (request, attempt), where
the attempt counts how many times this provider has seen the same request: the
same call always fails the same way, yet a retry may succeed, like a flaky server
seen by a deterministic test.

Markers in the last user message steer single requests (tests use them):

``[sim:fail]``          always a 500 (``ProviderHTTPError``)
``[sim:fail-once]``     a 500 on the first attempt of the request only
``[sim:invalid-once]``  invalid JSON on the first attempt, valid JSON afterwards
``[sim:latency=NNN]``   NNN ms of base latency for this request
``[sim:timeout]``       no answer: waits out ``timeout_s`` and raises ``ProviderTimeout``
``[sim:tools=SCRIPT]``  scripted tool calls, when the request offers tools (an agent test)

A tool script lists the calls of each model turn: ``;`` between the calls of one
turn (sent together, as parallel tool calls), ``|`` between turns; each call is
``name(ARGUMENTS)``, the arguments sent verbatim (malformed JSON included)::

    [sim:tools=search({"q": "x"});lookup({"id": 1})]    turn 1: two calls; turn 2: answer
    [sim:tools=search({"q": "x"})|lookup({"id": 1})]    turn 1: search, turn 2: lookup, then answer
    [sim:tools=lookup({"id": "one"})|lookup({"id": 1})] a bad argument, then a corrected one

The turn is the number of assistant tool-call messages since the last user
message, so the script replays the same way over HTTP (the emulator) as in
process. Once the script is done the model answers, quoting the tool results.
A script that does not parse is a 400 (``ProviderHTTPError``) naming the syntax.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable

from fanout.clock import Clock, SystemClock
from fanout.config import SimProviderConfig
from fanout.errors import ProviderHTTPError, ProviderTimeout
from fanout.sim._counters import CallCounters
from fanout.sim._embed import sim_embeddings
from fanout.sim._fingerprint import Attempts, Fingerprints, uniforms
from fanout.sim._schema_gen import generate, invalid_document
from fanout.sim._script import ScriptError, scripted_calls, tool_script
from fanout.sim._text import MARKER, fit_tokens, last_user_text, reply_text, sim_usage, token_count
from fanout.types import (
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    Message,
    ToolCall,
    ToolSpec,
)

__all__ = ["SimProvider"]

_LATENCY = re.compile(r"\[sim:latency=(\d+(?:\.\d+)?)\]")
_HANG_S = 3600.0  # how long a hung call waits when the caller gave no timeout
_JITTER_SALT = 0xFFFFFFFF  # attempts take salts from 0 up; jitter is per request, not attempt
_TAIL_SALT = 0x7A11_0000  # tail draws apart from fault draws of the same attempt
_TOOL_RESULT_CHARS = 60


class SimProvider(CallCounters):
    """A :class:`fanout.providers.Provider` that simulates a model offline.

    Counters (``calls``, ``calls_by_model``, ``in_flight``, ``max_in_flight``)
    let tests prove a call was or was not made and that concurrency caps held.
    It streams (its reply a word at a time) and embeds (hash-seeded vectors), and takes
    text only (``accepts``): an image or audio part is refused before the call.
    """

    accepts = frozenset({"text"})
    max_inputs = 2048

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
        tail_rate: float = 0.0,
        tail_latency_ms: float = 0.0,
        seed: int = 0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        for label, value in (
            ("latency_ms", latency_ms),
            ("latency_per_token_ms", latency_per_token_ms),
            ("jitter_sigma", jitter_sigma),
            ("tail_latency_ms", tail_latency_ms),
        ):
            if value < 0:
                raise ValueError(f"SimProvider: {label} must be >= 0 (got {value})")
        for label, rate in (
            ("error_rate", error_rate),
            ("timeout_rate", timeout_rate),
            ("invalid_json_rate", invalid_json_rate),
            ("tail_rate", tail_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"SimProvider: {label} must be within [0, 1] (got {rate})")
        self.name = name
        self.latency_ms = latency_ms
        self.latency_per_token_ms = latency_per_token_ms
        self.jitter_sigma = jitter_sigma
        self.error_rate = error_rate
        self.timeout_rate = timeout_rate
        self.invalid_json_rate = invalid_json_rate
        self.tail_rate = tail_rate
        self.tail_latency_ms = tail_latency_ms
        self.seed = seed
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._fingerprints = Fingerprints(seed)
        self._attempts = Attempts()
        self._tails = Attempts()  # counted apart: faults stay as they were without a tail

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
            invalid_json_rate=cfg.invalid_json_rate,
            tail_rate=cfg.tail_rate,
            tail_latency_ms=cfg.tail_latency_ms,
            seed=cfg.seed,
            clock=clock,
        )

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse:
        self._call_started(request.model)
        try:
            prompt = last_user_text(request.messages)
            marked = MARKER in prompt
            # Rates are read per call: tests may change them on a live provider.
            rated = bool(self.error_rate or self.timeout_rate or self.invalid_json_rate)
            # The fingerprint costs a hash; a plain text reply at zero latency needs none.
            key: int | None = None
            if rated or marked or request.tools or request.response_schema is not None:
                key = self._fingerprints.of(request)
            hang = fail = invalid = False
            if key is not None and (rated or marked):
                hang, fail, invalid = self._faults(key, prompt, rated)
            response = self._reply(request, prompt, key or 0, invalid)
            latency_s = self._latency_s(request, prompt, key, response.usage.output_tokens)
            if self.tail_rate:
                latency_s += self._tail_s(request, key)
            if hang or (timeout_s is not None and latency_s > timeout_s):
                waited_s = _HANG_S if timeout_s is None else timeout_s
                await self.clock.sleep(waited_s)
                raise ProviderTimeout(
                    f"{self.name}: no answer within {waited_s:g}s (simulated); "
                    "raise the timeout or lower the latency",
                    provider=self.name,
                )
            if latency_s > 0:
                await self.clock.sleep(latency_s)
            if fail:
                raise ProviderHTTPError(
                    "sim: injected server error", provider=self.name, status_code=500
                )
            return response
        finally:
            self._call_ended()

    def _faults(self, key: int, prompt: str, rated: bool) -> tuple[bool, bool, bool]:
        """``(hang, fail, invalid)`` for this attempt at the request ``key``."""
        attempt = self._attempts.next(key)
        hang = fail = invalid = False
        if rated:
            u_hang, u_fail, u_invalid = uniforms(key, attempt, 3)
            hang = u_hang < self.timeout_rate
            fail = u_fail < self.error_rate
            invalid = u_invalid < self.invalid_json_rate
        if MARKER in prompt:
            first = attempt == 0
            hang = hang or "[sim:timeout]" in prompt
            fail = fail or "[sim:fail]" in prompt or (first and "[sim:fail-once]" in prompt)
            invalid = invalid or (first and "[sim:invalid-once]" in prompt)
        return hang, fail, invalid

    def _latency_s(
        self, request: ChatRequest, prompt: str, key: int | None, output_tokens: int
    ) -> float:
        base_ms = self.latency_ms
        if MARKER in prompt:
            found = _LATENCY.search(prompt)
            if found:
                base_ms = float(found.group(1))
        latency_s = (base_ms + self.latency_per_token_ms * output_tokens) / 1000
        if latency_s > 0 and self.jitter_sigma > 0:
            if key is None:
                key = self._fingerprints.of(request)
            latency_s *= _lognormal(key, self.jitter_sigma)
        return latency_s

    def _tail_s(self, request: ChatRequest, key: int | None) -> float:
        """Extra latency of this attempt: ``tail_latency_ms`` for ``tail_rate`` of them."""
        key = key if key is not None else self._fingerprints.of(request)
        (draw,) = uniforms(key, self._tails.next(key) ^ _TAIL_SALT, 1)
        return self.tail_latency_ms / 1000 if draw < self.tail_rate else 0.0

    def _reply(self, request: ChatRequest, prompt: str, key: int, invalid: bool) -> ChatResponse:
        messages = request.messages
        if request.tools:
            calls = self._tool_calls(request, prompt, key)
            if calls:
                spoken = "".join(c.name + c.arguments for c in calls)
                return ChatResponse(
                    content=None,
                    usage=sim_usage(messages, max(3, token_count(spoken))),
                    finish_reason="tool_calls",
                    tool_calls=calls,
                    model=request.model,
                )
        schema = request.response_schema
        if schema is not None:
            value = generate(schema, random.Random(key), text=prompt)
            natural = invalid_document(schema, value) if invalid else json.dumps(value)
        else:
            natural = _tool_summary(messages) or reply_text(prompt)
        text, output_tokens, finish = fit_tokens(natural, request.max_tokens)
        return ChatResponse(
            content=text,
            usage=sim_usage(messages, output_tokens),
            finish_reason=finish,
            model=request.model,
        )

    def _tool_calls(self, request: ChatRequest, prompt: str, key: int) -> tuple[ToolCall, ...]:
        """The tool calls of this turn: the prompt's script, else one until a tool answered."""
        if MARKER in prompt:
            try:
                script = tool_script(prompt)
            except ScriptError as exc:
                raise ProviderHTTPError(
                    str(exc), provider=self.name, status_code=400, retryable=False
                ) from None
            if script is not None:
                return scripted_calls(script, request.messages)
        if _tools_answered(request.messages):
            return ()
        return (_tool_call(request.tools, prompt, random.Random(key)),)

    async def stream(
        self,
        request: ChatRequest,
        *,
        on_delta: Callable[[str], None],
        timeout_s: float | None = None,
    ) -> ChatResponse:
        """:meth:`complete`, its text then told to ``on_delta`` a word at a time."""
        response = await self.complete(request, timeout_s=timeout_s)
        for piece in _STREAM_PIECE.findall(response.content or ""):
            on_delta(piece)
        return response

    async def embed(
        self, request: EmbedRequest, *, timeout_s: float | None = None
    ) -> EmbedResponse:
        """Hash-seeded unit vectors (see :mod:`fanout.sim._embed`), after the latency."""
        self._call_started(request.model)
        try:
            if self.latency_ms > 0:
                await self.clock.sleep(self.latency_ms / 1000)
            return sim_embeddings(request)
        finally:
            self._call_ended()

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"SimProvider({self.name!r}, latency_ms={self.latency_ms}, calls={self.calls})"


_STREAM_PIECE = re.compile(r"\S+\s*|\s+")


def _lognormal(key: int, sigma: float) -> float:
    """A lognormal(0, sigma) factor fixed by ``key`` (Box-Muller over two hashed uniforms)."""
    u1, u2 = uniforms(key, _JITTER_SALT, 2)
    normal = math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)
    return math.exp(sigma * normal)


def _tools_answered(messages: list[Message]) -> bool:
    """Has a tool answered since the last user message?"""
    for message in reversed(messages):
        role = message["role"]
        if role == "tool":
            return True
        if role == "user":
            return False
    return False


def _tool_call(tools: tuple[ToolSpec, ...], prompt: str, rng: random.Random) -> ToolCall:
    chosen = next((t for t in tools if t.name in prompt), tools[0])
    arguments = generate(chosen.parameters, rng, text=prompt)
    return ToolCall(
        id=f"call_{rng.getrandbits(32):08x}", name=chosen.name, arguments=json.dumps(arguments)
    )


def _tool_summary(messages: list[Message]) -> str:
    """``Based on <tool>: <result>`` for the tool results since the last user message."""
    results: list[Message] = []
    names: dict[str, str] = {}
    for message in reversed(messages):
        role = message["role"]
        if role == "user":
            break
        if role == "tool":
            results.append(message)
        elif role == "assistant":
            for call in message.get("tool_calls") or ():
                function = call.get("function")
                if isinstance(function, dict):
                    names[str(call.get("id"))] = str(function.get("name"))
    if not results:
        return ""
    parts = []
    for message in reversed(results):
        name = message.get("name") or names.get(message.get("tool_call_id", ""), "the tool")
        content = (message.get("content") or "")[:_TOOL_RESULT_CHARS]
        parts.append(f"Based on {name}: {content}")
    return "; ".join(parts)
