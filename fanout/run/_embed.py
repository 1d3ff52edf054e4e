"""Embeddings: a step's texts packed with other steps' into requests (``EmbedPacker``),
each step charged its share of a request's usage, and its trace rows.

One packer per (provider, model) route. A step's texts join its queue (one per vector
size); a pump waits ``embed_linger_ms`` after the first arrival for more to gather,
then cuts packs of up to ``embed_max_inputs`` inputs and ``embed_max_tokens``
estimated tokens (and no more than the tokens/min bucket holds), takes a limiter
permit for each and sends it in a task of its own. While the pump waits for a permit,
more texts gather: a busy route packs fuller requests. A step's list longer than a
pack is split across requests. A pack's failure is retried (the route's retry policy)
as a whole; a failure that stays fails every step in it.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fanout.clock import Clock
from fanout.errors import CircuitOpen, ProviderError, RateLimited
from fanout.limits import Limiter, Permit
from fanout.providers import EmbeddingProvider, embed_max_inputs
from fanout.retry import CircuitBreaker, RetryPolicy
from fanout.types import EmbedRequest, EmbedResponse, Usage, estimate_text_tokens

__all__ = ["EmbedPacker", "PackAttempt", "Piece", "shares"]

Vector = tuple[float, ...]


@dataclass(frozen=True, slots=True)
class PackAttempt:
    """One request that carried some of a step's texts: what its trace row says."""

    start: float
    end: float
    attempt: int
    inputs: int  # the step's texts in it
    request_inputs: int  # every text in it
    usage: Usage  # the step's share of the request's usage
    estimated_tokens: int
    limiter_wait_s: float
    backoff_s: float
    error: BaseException | None
    model: str


@dataclass(slots=True)
class Piece:
    """A run of one step's texts that travel in one request."""

    texts: tuple[str, ...]
    estimate: int
    done: asyncio.Future[tuple[list[Vector], list[PackAttempt]]]
    attempts: list[PackAttempt] = field(default_factory=list)


class EmbedPacker:
    """Packs concurrent steps' texts into embeddings requests on one route."""

    def __init__(
        self,
        *,
        provider: EmbeddingProvider,
        model: str,
        limiter: Limiter,
        circuit: CircuitBreaker,
        retry: RetryPolicy,
        clock: Clock,
        timeout_s: float,
        max_inputs: int,
        max_tokens: int,
        linger_s: float,
        verdict: Callable[[BaseException, Permit], None],
    ) -> None:
        self.provider = provider
        self.model = model
        self.limiter = limiter
        self.circuit = circuit
        self.retry = retry
        self.clock = clock
        self.timeout_s = timeout_s
        self.max_inputs = max(1, min(max_inputs, embed_max_inputs(provider, model)))
        self.max_tokens = max_tokens
        self.linger_s = linger_s
        self._verdict = verdict
        self._queues: dict[int | None, deque[Piece]] = {}
        self._pump: asyncio.Task[None] | None = None
        self._holding: list[Piece] = []
        self._sending: set[asyncio.Task[None]] = set()
        self.requests = 0  # sent, retries included

    def submit(self, texts: tuple[str, ...], dimensions: int | None) -> list[Piece]:
        """Queue a step's texts (split into pieces no pack would refuse); returns them."""
        pieces: list[Piece] = []
        loop = asyncio.get_running_loop()
        run: list[str] = []
        tokens = 0
        limit = self._token_limit()
        for text in texts:
            cost = max(1, estimate_text_tokens(text))
            if run and (len(run) >= self.max_inputs or tokens + cost > limit):
                pieces.append(Piece(tuple(run), tokens, loop.create_future()))
                run, tokens = [], 0
            run.append(text)
            tokens += cost
        pieces.append(Piece(tuple(run), tokens, loop.create_future()))
        self._queues.setdefault(dimensions, deque()).extend(pieces)
        if self._pump is None or self._pump.done():
            self._pump = loop.create_task(self._run_pump())
        return pieces

    def _token_limit(self) -> int:
        capacity = self.limiter.token_capacity()
        return self.max_tokens if capacity is None else max(1, min(self.max_tokens, capacity))

    async def _run_pump(self) -> None:
        try:
            await self._pump_packs()
        except BaseException as exc:  # cancelled (the engine closing): no step waits forever
            _fail(self._holding, exc)
            for queue in self._queues.values():
                _fail(list(queue), exc)
                queue.clear()
            raise

    async def _pump_packs(self) -> None:
        if self.linger_s > 0:
            await self.clock.sleep(self.linger_s)
        while any(self._queues.values()):
            for dimensions, queue in list(self._queues.items()):
                if not queue:
                    continue
                pack = self._cut(queue)
                if not pack:
                    continue
                tokens = sum(p.estimate for p in pack)
                self._holding = pack  # cut, waiting for its permit
                permit = await self.limiter.acquire(tokens)
                self._holding = []
                task = asyncio.get_running_loop().create_task(
                    self._send(pack, dimensions, permit, tokens)
                )
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    def _cut(self, queue: deque[Piece]) -> list[Piece]:
        """The next pack: the first piece waiting, then every later one that still fits
        (first fit, in arrival order); the rest wait for the next pack."""
        pack: list[Piece] = []
        rest: list[Piece] = []
        inputs = tokens = 0
        limit = self._token_limit()
        while queue:
            piece = queue.popleft()
            if piece.done.cancelled():  # its step was cancelled: nothing to send for it
                continue
            fits = inputs + len(piece.texts) <= self.max_inputs and tokens + piece.estimate <= limit
            if pack and not fits:
                rest.append(piece)
                continue
            pack.append(piece)
            inputs += len(piece.texts)
            tokens += piece.estimate
        queue.extend(rest)
        return pack

    async def _send(
        self, pack: list[Piece], dimensions: int | None, permit: Permit, tokens: int
    ) -> None:
        """Send one pack, retried as a whole; every piece gets its vectors or the error."""
        request = EmbedRequest(self.model, tuple(t for p in pack for t in p.texts), dimensions)
        first = self.clock.now()
        attempt, backoff_s = 1, 0.0
        while True:
            start = self.clock.now()
            try:
                reply = await self._attempt(request, permit, tokens)
            except ProviderError as exc:
                self._note(pack, request, start, attempt, permit, backoff_s, exc, None)
                policy = self.retry
                if (
                    not policy.retryable(exc)
                    or attempt >= policy.max_attempts
                    or self.clock.now() - first >= policy.max_elapsed_s
                ):
                    _fail(pack, exc)
                    return
                backoff_s = self._backoff_s(attempt, exc)
                await self.clock.sleep(backoff_s)
                attempt += 1
                permit = await self.limiter.acquire(tokens)
                continue
            except BaseException as exc:  # cancelled (the engine is closing)
                _fail(pack, exc)
                raise
            self._note(pack, request, start, attempt, permit, backoff_s, None, reply)
            offset = 0
            for piece in pack:
                vectors = list(reply.vectors[offset : offset + len(piece.texts)])
                offset += len(piece.texts)
                if not piece.done.done():
                    piece.done.set_result((vectors, piece.attempts))
            return

    async def _attempt(self, request: EmbedRequest, permit: Permit, tokens: int) -> EmbedResponse:
        """One request under its permit: the circuit, the call, what it tells the limiter."""
        circuit = self.circuit
        try:
            if not circuit.allow():
                cause = circuit.cause or "repeated failures"
                raise CircuitOpen(
                    f"{self.limiter.name}: not called, its circuit is open (last: {cause})",
                    provider=self.provider.name,
                    cause=cause,
                )
            self.requests += 1
            reply = await self.provider.embed(request, timeout_s=self.timeout_s)
        except BaseException as exc:
            if not isinstance(exc, CircuitOpen):
                self._verdict(exc, permit)
            permit.release()
            raise
        spent = reply.usage.total_tokens
        permit.settle(spent)
        permit.release()
        self.limiter.observe(reply.headers, tokens=spent)
        circuit.record_success()
        return reply

    def _backoff_s(self, attempt: int, error: ProviderError) -> float:
        policy = self.retry
        cap = min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** (attempt - 1))
        wait = random.uniform(0.0, cap)  # full jitter, as the chat path's
        if isinstance(error, RateLimited) and error.retry_after_s is not None:
            wait = max(wait, min(error.retry_after_s, policy.max_elapsed_s))
        return wait

    def _note(
        self,
        pack: list[Piece],
        request: EmbedRequest,
        start: float,
        attempt: int,
        permit: Permit,
        backoff_s: float,
        error: BaseException | None,
        reply: EmbedResponse | None,
    ) -> None:
        """Each piece's share of one request, for its step's trace row and books."""
        used = shares(reply.usage.input_tokens, [p.estimate for p in pack]) if reply else None
        end = self.clock.now()
        for index, piece in enumerate(pack):
            piece.attempts.append(
                PackAttempt(
                    start=start, end=end, attempt=attempt, inputs=len(piece.texts),
                    request_inputs=len(request.inputs),
                    usage=Usage(used[index] if used else 0, 0), estimated_tokens=piece.estimate,
                    limiter_wait_s=permit.wait_s, backoff_s=backoff_s, error=error,
                    model=reply.model if reply else "",
                )
            )  # fmt: skip


def _fail(pack: list[Piece], error: BaseException) -> None:
    for piece in pack:
        if not piece.done.done():
            piece.done.set_exception(error)
            piece.done.exception()  # retrieved: a step that was cancelled never asks


def shares(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights``, in whole numbers that add up to it
    exactly (largest remainder first)."""
    weight = sum(weights)
    if weight <= 0:
        even = [total // len(weights)] * len(weights)
        even[0] += total - sum(even)
        return even
    exact = [total * w / weight for w in weights]
    parts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts
