"""``BatchClient``: a Provider whose calls go into the provider's Batch API and answer when it does.

Why a provider and not a second executor: a batch job's records run on the engine's
executor exactly as online; an llm step's call reaches ``complete()``, which puts the
request into the open batch of its model and waits for that batch. Every record in
the window does the same, so the first steps of all of them fill the first batches;
when those answer, the records move on (tools and routes as usual) and their next
steps fill the next batches: the waves of a DAG fall out of the window, and retries,
fallbacks, budgets, the call journal and traces are the engine's own.

A model's open batch is submitted when it is full (the API's requests or bytes, or the
model's enqueued-token room), when no call joined it for ``flush_idle_s`` (every record
in the window is waiting), or when its first call has waited ``max_wait_s``. A batch
is journaled (:class:`BatchLog`) before it is submitted and its id as soon as it is
known; a later run polls it instead of submitting its calls again, and claims the
answers a killed run never handed out. Polls back off from ``poll_initial_s`` to
``poll_max_s``. A line that failed or expired raises the error its call retries on
(a later batch, then online with ``online_fallback``); an outage of the Batch API
waits, it never fails the calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections import Counter, deque
from collections.abc import Mapping

from fanout.batch._batch_lines import BatchStats, Line, Sent, copy_error, not_run
from fanout.batch._batch_log import KEY_CHARS, BatchLog, key_of
from fanout.clock import Cancellable, Clock
from fanout.config import BatchProviderConfig
from fanout.errors import ProviderError
from fanout.providers import BatchAPI, BatchStatus, Provider
from fanout.run import call_key
from fanout.types import BatchRef, ChatRequest, ChatResponse, estimate_prompt_tokens

__all__ = ["BatchClient", "BatchStats"]

_log = logging.getLogger(__name__)

_FIND_MARGIN_S = 300.0  # a batch's created_at may precede the log's "open" by clock skew
_OUTAGE_MAX_S = 60.0  # back-off cap while the Batch API itself fails (waits, never fails)


class BatchClient:
    """The batch mode of one provider for a batch job (see the module docstring).

    ``online`` answers the models that do not batch (the router sends them there);
    ``api`` is the provider's Batch API; ``log`` the job's batch directory.
    ``enqueued_tokens``: the enqueued-prompt-token limit of each model name that sets one.
    """

    def __init__(
        self,
        online: Provider,
        api: BatchAPI,
        log: BatchLog,
        *,
        clock: Clock,
        settings: BatchProviderConfig,
        enqueued_tokens: Mapping[str, int] | None = None,
    ) -> None:
        self.name = online.name
        self.online = online
        self.api = api
        self.log = log
        self.clock = clock
        self.settings = settings
        self.max_requests = min(settings.max_requests or api.max_requests, api.max_requests)
        self.max_bytes = min(settings.max_bytes or api.max_bytes, api.max_bytes)
        self._limits = dict(enqueued_tokens or {})
        self._enqueued: Counter[str] = Counter()
        self._buffers: dict[str, deque[Line]] = {}
        self._buffer_bytes: Counter[str] = Counter()
        self._first_at: dict[str, float] = {}
        self._outstanding: dict[str, Sent] = {}
        self._claimable: dict[str, list[Line]] = {}
        self._ended: Counter[str] = Counter()
        self._answered = self._submitted_lines = 0
        self._tag = os.urandom(3).hex()
        self._seq = 0
        self._last_enqueue = clock.now()
        self._submitting = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_pump = asyncio.Event()
        self._wake_poller = asyncio.Event()
        self.settled = asyncio.Event()  # nothing left to do here but wait for batches
        self._started = False

    # -- the Provider interface --------------------------------------------------------

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse:
        """The reply, once the batch holding this request has answered it. ``timeout_s``
        is not applied: a batch answers within its own window."""
        self._start()
        key = call_key(self.name, request)[:KEY_CHARS]
        line = self._claim(key)
        if line is not None and line.answer is not None:  # an earlier run's, never handed out
            return self._delivered(line, self.api.answer(request, line.answer))
        if line is None:
            line = self._new_line(key, request)
        future = line.future = asyncio.get_running_loop().create_future()
        try:
            response = await future
        except asyncio.CancelledError:
            self._abandon(line)
            raise
        return self._delivered(line, self.api.answer(request, response))

    async def aclose(self) -> None:
        """Stop polling (batches in flight stay journaled for the next run) and close."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        try:
            await self.api.aclose()
        finally:
            self.log.close()
            await self.online.aclose()

    # -- what the job shows and waits for -----------------------------------------------

    def stats(self) -> BatchStats:
        states: Counter[str] = Counter(self._ended)
        for sent in self._outstanding.values():
            states[sent.status.state if sent.status is not None else "submitting"] += 1
        buffered = sum(len(b) for b in self._buffers.values())
        running = sum(
            s.status.completed + s.status.failed
            for s in self._outstanding.values()
            if s.status is not None
        )
        return BatchStats(dict(states), self._answered + running, self._submitted_lines, buffered)

    def _settle_check(self) -> None:
        quiet = self.clock.now() - self._last_enqueue >= self.settings.flush_idle_s
        idle = (
            quiet
            and bool(self._outstanding)
            and not self._submitting
            and not any(self._buffers.values())
            and all(s.polled for s in self._outstanding.values())
        )
        if idle:
            self.settled.set()
        else:
            self.settled.clear()

    # -- lines ---------------------------------------------------------------------

    def _new_line(self, key: str, request: ChatRequest) -> Line:
        self._seq += 1
        custom_id = f"{key}-{self._tag}{self._seq:x}"
        payload = self.api.encode(custom_id, request)
        tokens = estimate_prompt_tokens(request.messages, request.tools)
        line = Line(custom_id, request.model, payload, tokens)
        self._buffer(line, front=False)
        return line

    def _buffer(self, line: Line, *, front: bool) -> None:
        buffer = self._buffers.setdefault(line.model, deque())
        if not buffer:
            self._first_at[line.model] = self.clock.now()
        if front:
            buffer.appendleft(line)
        else:
            buffer.append(line)
        self._buffer_bytes[line.model] += len(line.payload or b"")
        self._last_enqueue = self.clock.now()
        self.settled.clear()
        full = len(buffer) >= self.max_requests or self._buffer_bytes[line.model] >= self.max_bytes
        if full or len(buffer) == 1:
            self._wake_pump.set()

    def _claim(self, key: str) -> Line | None:
        """A line for this call that no call waits for: an earlier run's, or one a
        cancelled call left in a batch."""
        lines = self._claimable.get(key)
        while lines:
            line = lines.pop()
            if line.future is None:
                if not lines:
                    del self._claimable[key]
                return line
        self._claimable.pop(key, None)
        return None

    def _abandon(self, line: Line) -> None:
        """The call waiting for ``line`` was cancelled: unsent, it is dropped; sent, its
        answer is kept for whichever call asks the same (this run or a later one)."""
        line.future = None
        if line.label is None:  # dropped where it waits (a Ctrl-C cancels them all at once)
            self._buffer_bytes[line.model] -= len(line.payload or b"")
            line.payload = None
            return
        self._claimable.setdefault(key_of(line.custom_id), []).append(line)

    def _delivered(self, line: Line, response: ChatResponse) -> ChatResponse:
        self.log.deliver(line.custom_id)
        return dataclasses.replace(response, batch=line.ref)

    # -- start, and what earlier runs left ------------------------------------------------

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        unsent = self._resume()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._pump(unsent), name="fanout-batch-pump"),
            loop.create_task(self._poller(), name="fanout-batch-poller"),
        ]

    def _resume(self) -> list[tuple[Sent, float]]:
        """Take over the batches of earlier runs; returns those a kill left unsubmitted
        (or submitted without the answer saying so), with when they were opened."""
        delivered = self.log.delivered()
        unsent: list[tuple[Sent, float]] = []
        for logged in self.log.batches().values():
            if logged.ended:
                self._ended[str(logged.state)] += 1
                ref = BatchRef(logged.batch_id or "", logged.submitted_at, logged.ended_at)
                for custom_id, answer in self.log.answers(logged.label):
                    if custom_id not in delivered:
                        line = Line(custom_id, logged.model, None, 0)
                        line.answer, line.label, line.ref = answer, logged.label, ref
                        self._claimable.setdefault(key_of(custom_id), []).append(line)
                continue
            lines = [Line(c, logged.model, None, 0) for c in logged.custom_ids]
            sent = Sent(logged.label, logged.model, lines, logged.tokens)
            for line in lines:
                line.label = logged.label
                self._claimable.setdefault(key_of(line.custom_id), []).append(line)
            self._enqueued[logged.model] += logged.tokens
            self._submitted_lines += len(lines)
            if logged.batch_id is None:
                unsent.append((sent, logged.opened_at))
                self._submitting += 1
            else:
                sent.batch_id, sent.submitted_at = logged.batch_id, logged.submitted_at
                self._outstanding[logged.label] = sent
        return unsent

    # -- cutting and submitting -------------------------------------------------------

    async def _pump(self, unsent: list[tuple[Sent, float]]) -> None:
        for sent, opened_at in unsent:  # a kill cut their submit short: find, else submit
            payload = self.log.payload_path(sent.label).read_bytes()
            await self._submit(sent, payload, opened_at=opened_at, uncertain=True)
        timer: Cancellable | None = None
        while True:
            await self._flush_due()
            self._settle_check()
            delay = self._next_flush_in()
            if delay is not None:
                timer = self.clock.call_later(delay, self._wake_pump.set)
            await self._wake_pump.wait()
            self._wake_pump.clear()
            if timer is not None:
                timer.cancel()
                timer = None

    def _next_flush_in(self) -> float | None:
        now, s = self.clock.now(), self.settings
        due = [
            min(self._last_enqueue + s.flush_idle_s, self._first_at[model] + s.max_wait_s)
            for model, buffer in self._buffers.items()
            if buffer
        ]
        if not due:
            return s.flush_idle_s if self._outstanding else None  # to notice it settled
        return max(0.0, min(due) - now)

    async def _flush_due(self) -> None:
        s = self.settings
        for model, buffer in list(self._buffers.items()):
            while buffer:
                now = self.clock.now()
                full = (
                    len(buffer) >= self.max_requests or self._buffer_bytes[model] >= self.max_bytes
                )
                idle = now - self._last_enqueue >= s.flush_idle_s
                aged = now - self._first_at[model] >= s.max_wait_s
                if not (full or idle or aged):
                    break
                lines = self._cut(model, buffer)
                if not lines:
                    break  # no room under the model's enqueued-token limit: a batch must end
                await self._send(model, lines)
                if buffer:
                    self._first_at[model] = now

    def _cut(self, model: str, buffer: deque[Line]) -> list[Line]:
        """The lines of the next batch of ``model``: the API's limits, and its room."""
        limit = self._limits.get(model)
        room = None if limit is None else limit - self._enqueued[model]
        lines: list[Line] = []
        size = tokens = 0
        while buffer and len(lines) < self.max_requests:
            line = buffer[0]
            if line.payload is None:  # its call was cancelled before it was sent
                buffer.popleft()
                continue
            length = len(line.payload)
            if lines and size + length > self.max_bytes:
                break
            if (
                room is not None
                and tokens + line.tokens > room
                and (lines or self._enqueued[model])
            ):
                break  # a single line over the limit still goes, alone, once nothing waits
            buffer.popleft()
            lines.append(line)
            size += length
            tokens += line.tokens
        self._buffer_bytes[model] -= size
        return lines

    async def _send(self, model: str, lines: list[Line]) -> None:
        self._seq += 1
        label = f"b{self._tag}{self._seq:06x}"
        payload = b"".join(line.payload or b"" for line in lines)
        tokens = sum(line.tokens for line in lines)
        opened_at = self.clock.wall().timestamp()
        self.log.open_batch(label, model, payload, len(lines), tokens, opened_at)
        for line in lines:
            line.label = label
        sent = Sent(label, model, lines, tokens)
        self._enqueued[model] += tokens
        self._submitted_lines += len(lines)
        self._submitting += 1
        await self._submit(sent, payload, opened_at=opened_at)

    async def _submit(
        self, sent: Sent, payload: bytes, *, opened_at: float, uncertain: bool = False
    ) -> None:
        """Submit once: after a failure that may have created it, look for it first."""
        wait_s = self.settings.poll_initial_s
        try:
            while True:
                try:
                    status = None
                    if uncertain:
                        status = await self.api.find(
                            sent.label, since=opened_at - _FIND_MARGIN_S, payload=payload
                        )
                    if status is None:
                        status = await self.api.submit(payload, label=sent.label)
                    break
                except ProviderError as exc:
                    if not exc.retryable:
                        self._refused(sent, exc)
                        return
                    _log.warning(
                        "batch %s: submit failed (%s); trying again in %.0f s",
                        sent.label,
                        exc,
                        wait_s,
                    )
                    uncertain = True
                    await self.clock.sleep(wait_s)
                    wait_s = min(2 * wait_s, _OUTAGE_MAX_S)
            sent.batch_id = status.batch_id
            sent.submitted_at = self.clock.wall().timestamp()
            sent.status = status
            self.log.submitted(sent.label, status.batch_id, sent.submitted_at)
            sent.interval_s = self.settings.poll_initial_s
            sent.next_poll = self.clock.now() + sent.interval_s
            self._outstanding[sent.label] = sent
            self._wake_poller.set()
        finally:
            self._submitting -= 1

    def _refused(self, sent: Sent, error: ProviderError) -> None:
        """The API refused the batch (a bad key, a payload it will not take): its calls fail."""
        self.log.ended(sent.label, "failed", None, [], error_code="refused")
        self._ended["failed"] += 1
        self._enqueued[sent.model] -= sent.tokens
        for line in sent.lines:
            self._fail(line, copy_error(error))

    # -- polling and answers ----------------------------------------------------------

    async def _poller(self) -> None:
        timer: Cancellable | None = None
        while True:
            now = self.clock.now()
            for sent in [
                s for s in self._outstanding.values() if s.batch_id and s.next_poll <= now
            ]:
                await self._poll(sent)
            self._settle_check()
            waits = [s.next_poll for s in self._outstanding.values() if s.batch_id]
            if waits:
                timer = self.clock.call_later(
                    max(0.0, min(waits) - self.clock.now()), self._wake_poller.set
                )
            await self._wake_poller.wait()
            self._wake_poller.clear()
            if timer is not None:
                timer.cancel()
                timer = None

    async def _poll(self, sent: Sent) -> None:
        try:
            status = await self.api.poll(sent.batch_id)
        except ProviderError as exc:  # the Batch API is out: wait, never fail the calls
            _log.warning("batch %s: poll failed (%s); trying again", sent.batch_id, exc)
            sent.interval_s = min(max(2 * sent.interval_s, 1.0), _OUTAGE_MAX_S)
            sent.next_poll = self.clock.now() + sent.interval_s
            return
        sent.status, sent.polled = status, True
        if status.ended:
            try:
                await self._collect(sent, status)
            except ProviderError as exc:
                _log.warning("batch %s: results not fetched (%s); trying again", sent.batch_id, exc)
                sent.next_poll = self.clock.now() + min(max(sent.interval_s, 1.0), _OUTAGE_MAX_S)
            return
        sent.interval_s = min(2 * sent.interval_s, self.settings.poll_max_s)
        sent.next_poll = self.clock.now() + sent.interval_s

    async def _collect(self, sent: Sent, status: BatchStatus) -> None:
        """An ended batch: its answers saved, then handed to their calls."""
        if status.state == "failed" and status.error_code == "token_limit_exceeded":
            self._requeue(sent)
            return
        results = await self.api.results(status)
        answers = [(r.custom_id, r.response) for r in results if r.response is not None]
        self.log.ended(sent.label, status.state, status.ended_at, answers, status.error_code)
        del self._outstanding[sent.label]
        self._ended[status.state] += 1
        self._enqueued[sent.model] -= sent.tokens
        self._wake_pump.set()  # room under the enqueued-token limit
        ref = BatchRef(sent.batch_id, sent.submitted_at, status.ended_at)
        found = {r.custom_id: r for r in results}
        for line in sent.lines:
            line.ref = ref
            result = found.get(line.custom_id)
            if result is not None and result.response is not None:
                self._answered += 1
                self._answer(line, result.response)
            elif result is not None and result.error is not None:
                self._answered += 1
                self._fail(line, result.error)
            else:
                self._fail(line, not_run(self.name, sent, status))

    def _answer(self, line: Line, response: ChatResponse) -> None:
        future = line.future
        if future is not None and not future.done():
            future.set_result(response)
            return
        line.future, line.answer = None, response  # nobody waits: kept for a later call
        lines = self._claimable.setdefault(key_of(line.custom_id), [])
        if line not in lines:  # a cancelled call's line is there already
            lines.append(line)

    def _fail(self, line: Line, error: ProviderError) -> None:
        error.batch = line.ref
        future = line.future
        if future is not None and not future.done():
            future.set_exception(error)
        # nobody waits: a failed line is owed to no one; its call, run again, tries anew
        lines = self._claimable.get(key_of(line.custom_id))
        if lines is not None and line in lines:
            lines.remove(line)

    def _requeue(self, sent: Sent) -> None:
        """The provider's enqueued-token limit turned the batch away: learn the limit and
        send its calls again, in batches that fit, once earlier ones end."""
        others = self._enqueued[sent.model] - sent.tokens
        learned = others if others > 0 else max(1, sent.tokens // 2)
        self._limits[sent.model] = min(self._limits.get(sent.model, learned), learned)
        _log.warning(
            "batch %s: %s's enqueued-token limit reached; its %d calls wait for room "
            "(limit taken as %d tokens)",
            sent.batch_id,
            sent.model,
            len(sent.lines),
            self._limits[sent.model],
        )
        self.log.ended(sent.label, "failed", None, [], error_code="token_limit_exceeded")
        del self._outstanding[sent.label]
        self._enqueued[sent.model] -= sent.tokens
        self._submitted_lines -= len(sent.lines)
        for line in reversed(sent.lines):
            line.label = None
            if line.future is not None and line.payload is not None:
                self._buffer(line, front=True)
            else:  # an earlier run's line: its call, when it runs, sends it anew
                self._fail(line, not_run(self.name, sent, None))
        self._wake_pump.set()
