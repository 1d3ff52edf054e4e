"""``Limiter``: a paced FIFO queue over requests/min, tokens/min and a concurrency cap.

Work waits its turn; nothing is rejected locally. One pump task wakes the head of
the queue when its capacity is due (one timer, never a polling loop). Provider
feedback (429s, ``x-ratelimit-*`` headers) adapts the pace through
:class:`AdaptiveRate`, and a ``retry-after`` pauses the whole queue.

The buckets model the provider's: a limit of R per minute whose bucket holds
``window_s`` seconds of it (OpenAI's hold a minute: 3,000/min admits 3,000 at once)
is spent at once, less what is in flight, once the provider's ``remaining`` and
``reset`` headers confirm what it holds; until then, and where a 429 while spending a
burst shows the real window is short (limits enforced per second), the bucket holds
``burst_s`` (1 s) and calls are paced.

Interactive calls (a service's requests) have a queue of their own, served first;
batch work sharing the quota keeps a weighted share (one grant in
``interactive_weight + 1`` while both wait), so it never starves.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from dataclasses import dataclass

from fanout.clock import Clock
from fanout.limits._adaptive import AdaptiveRate
from fanout.limits._bucket import TokenBucket
from fanout.limits._headers import RateLimitHeaders

__all__ = ["LEASED_BURST_S", "LeaseReport", "Limiter", "LimiterState", "Permit"]

_RATE_WINDOW_S = 2.0
# Slow start: until the provider first answers, at most this many calls are in flight,
# so a limit configured too high is corrected by the first response's headers before
# a whole local burst has gone out. While no pace is known at all (none configured,
# stated or learnt; on Ray: none leased yet), the cap after that is a congestion window
# that grows by a call per answer (doubling per round trip) and halves on a 429, once
# per window of calls.
_INITIAL_WINDOW = 8
# ... and that, while full, doubles at least this often: a 429 comes back at once even
# when answers take long (a 30 s generation), so slow answers need not slow the ramp.
_WINDOW_DOUBLING_S = 1.0
LEASED_BURST_S = 0.5
# A bucket window learnt from headers changes only when it moves by more than this share.
_WINDOW_CHANGE = 0.1
# While both queues wait, batch work gets one grant for every this many interactive ones.
_INTERACTIVE_WEIGHT = 4


@dataclass(frozen=True, slots=True)
class LimiterState:
    """A snapshot for traces and progress output: where the time goes."""

    name: str
    requests_per_min: float | None  # the pace now (None: unlimited)
    tokens_per_min: float | None
    configured_requests_per_min: float | None
    configured_tokens_per_min: float | None
    in_flight: int
    queued: int
    granted: int
    rate_limited: int
    total_wait_s: float
    paused_s: float  # time left in a retry-after pause


@dataclass(frozen=True, slots=True)
class LeaseReport:
    """What a leased limiter tells its quota coordinator: counters since it started
    (cumulative, so a lost report loses nothing), its demand now, and any limit the
    provider stated in its headers."""

    granted: int
    ok: int
    tokens: int
    rate_limited: int
    queued: int
    in_flight: int
    stated_requests_per_min: float | None
    stated_tokens_per_min: float | None
    retry_after_s: float | None  # the longest pause asked for since the last report
    # The provider's last word on its buckets (remaining, and seconds to refill to full),
    # and what is left of the burst the coordinator granted this worker.
    remaining_requests: float | None = None
    reset_requests_s: float | None = None
    remaining_tokens: float | None = None
    reset_tokens_s: float | None = None
    burst_left_requests: float = 0.0
    burst_left_tokens: float = 0.0


_Waiter = tuple[int, "asyncio.Future[Permit]", float]  # tokens, the caller's future, since


class Permit:
    """Capacity granted to one call: settle its tokens, then release its slot (once)."""

    __slots__ = ("_limiter", "_open", "seq", "tokens", "wait_s")

    def __init__(self, limiter: Limiter, tokens: int, wait_s: float, seq: int = 0) -> None:
        self._limiter = limiter
        self.tokens = tokens
        self.wait_s = wait_s
        self.seq = seq  # the limiter's grant count when this one was granted
        self._open = True

    def settle(self, actual_tokens: int) -> None:
        """Replace the reserved token estimate by what the provider counted."""
        self._limiter._adjust_tokens(self.tokens - actual_tokens, in_flight=self._open)
        self.tokens = actual_tokens

    def release(self) -> None:
        if self._open:
            self._open = False
            self._limiter._release(self.tokens)


class Limiter:
    """Paces calls to one (provider, model, key) under its requests/min and tokens/min.

    ``acquire(tokens)`` waits until a request, ``tokens`` tokens and a concurrency
    slot are all available, in arrival order. Limits left as ``None`` are not
    enforced until the provider reveals them (429s or headers).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        name: str = "",
        requests_per_min: float | None = None,
        tokens_per_min: float | None = None,
        max_concurrency: int | None = None,
        burst_s: float = 1.0,
        window_s: float | None = None,
        adaptive: bool = True,
        interactive_weight: int = _INTERACTIVE_WEIGHT,
    ) -> None:
        if interactive_weight < 1:
            raise ValueError(f"interactive_weight must be >= 1 (got {interactive_weight})")
        self.name = name
        self.interactive_weight = interactive_weight
        self.clock = clock
        self.burst_s = burst_s
        # The longest bucket the provider may hold (seconds of its limit); its headers
        # say how long it is. None: never spend more than ``burst_s`` at once.
        self.window_s = window_s
        self._req_window = self._tok_window = burst_s  # what each bucket holds now
        self._short_window = False  # a 429 while spending a burst: pace from now on
        self._burst_seq = 0  # the last grant made out of a burst (more than burst_s held)
        self.adaptive = adaptive
        self.max_concurrency = max_concurrency
        now = clock.now()
        self._requests = AdaptiveRate(requests_per_min / 60 if requests_per_min else None)
        self._tokens = AdaptiveRate(tokens_per_min / 60 if tokens_per_min else None)
        self._req_bucket = self._bucket(self._requests.rate, now, minimum=1.0)
        self._tok_bucket = self._bucket(self._tokens.rate, now, minimum=1.0)
        self._waiters: collections.deque[_Waiter] = collections.deque()  # batch (default)
        self._interactive: collections.deque[_Waiter] = collections.deque()
        self._interactive_run = 0  # interactive grants in a row while batch work waited
        self._pump_task: asyncio.Task[None] | None = None
        self._slot_freed = asyncio.Event()
        self._tokens_back = asyncio.Event()  # reserved tokens given back (see _wait_tokens)
        self._paused_until = 0.0
        self._answered = False  # has the provider answered yet (slow start until then)
        # The congestion window while no pace is known (None: a pace governs instead),
        # the size past which it grows linearly, and the grant count at its last cut.
        self._cwnd: float | None = float(_INITIAL_WINDOW) if adaptive else None
        self._ssthresh = float("inf")
        self._cut_seq = 0
        self._window_since = now  # when the window last doubled by time, or was cut
        self._in_flight = 0
        self._in_flight_tokens = 0  # reserved by the calls in flight
        self._granted = 0
        self._limited = 0
        self._total_wait_s = 0.0
        # Accepted responses per window, to estimate the provider's real rate at a 429.
        # The first window opens at the first answer (time before it is not a rate the
        # provider accepted); until one closes, nothing is measured (None).
        self._window_start: float | None = None
        self._window_ok = 0
        self._window_tokens = 0
        self._last_ok_per_s: float | None = None
        self._last_tok_per_s: float | None = None
        # Leased mode (the Ray backend): a coordinator sets the pace from every worker's
        # reports; this limiter enforces its share and reports what it sees.
        self.leased = False
        self._ok_total = 0
        self._tokens_total = 0
        self._stated_rpm: float | None = None
        self._stated_tpm: float | None = None
        self._retry_after_s: float | None = None
        self._last_headers = RateLimitHeaders()  # the latest remaining/reset, for the coordinator
        # A burst the coordinator granted (leased mode): spent before the paced bucket.
        self._burst_req = 0.0
        self._burst_tok = 0.0

    # -- the call path ----------------------------------------------------------

    async def acquire(self, tokens: int = 0, *, interactive: bool = False) -> Permit:
        """A permit for one call of ``tokens`` tokens; ``interactive`` calls queue ahead
        of batch ones (which keep a weighted share)."""
        now = self.clock.now()
        if not self._waiters and not self._interactive and self._can_grant(tokens, now):
            return self._grant(tokens, now, 0.0)
        future: asyncio.Future[Permit] = asyncio.get_running_loop().create_future()
        (self._interactive if interactive else self._waiters).append((tokens, future, now))
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.get_running_loop().create_task(self._pump())
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                permit = future.result()  # granted as we were cancelled: give it back
                permit.settle(0)
                permit.release()
            raise

    def _cap(self, now: float) -> int | None:
        if not self._answered:
            return min(self.max_concurrency or _INITIAL_WINDOW, _INITIAL_WINDOW)
        window = self._window(now)
        if window is None or (self.max_concurrency is not None and self.max_concurrency < window):
            return self.max_concurrency
        return window

    def _window(self, now: float) -> int | None:
        """The congestion window's cap, while no pace is known (see ``_INITIAL_WINDOW``)."""
        if self._cwnd is None:
            return None
        if self._requests.rate is not None or self._tokens.rate is not None:
            # a pace is known (configured, stated, learnt, or leased by the coordinator,
            # which learns it from every worker's 429s): it governs from now on
            self._cwnd = None
            return None
        if (
            self._in_flight >= self._cwnd < self._ssthresh
            and now - self._window_since >= _WINDOW_DOUBLING_S
        ):
            self._cwnd = min(self._cwnd * 2, self._ssthresh)
            self._window_since = now
        return int(self._cwnd)

    def _window_due_s(self, now: float) -> float | None:
        """Seconds until a full window may double by time (``None``: not the window)."""
        if self._cwnd is None or not self._answered or self._cwnd >= self._ssthresh:
            return None
        return max(0.0, self._window_since + _WINDOW_DOUBLING_S - now)

    def _can_grant(self, tokens: int, now: float) -> bool:
        cap = self._cap(now)
        if cap is not None and self._in_flight >= cap:
            return False
        if now < self._paused_until:
            return False
        req, tok = self._req_bucket, self._tok_bucket
        return (req is None or req.wait_s(1, now) == 0 or self._burst_req >= 1) and (
            tok is None or tokens == 0 or tok.wait_s(tokens, now) == 0 or self._burst_tok >= tokens
        )

    def _grant(self, tokens: int, now: float, wait_s: float) -> Permit:
        req, tok = self._req_bucket, self._tok_bucket
        # The paced bucket first, the coordinator's burst grant when it is empty: a
        # grant spent first would leave the pace's refill to overflow its small bucket.
        if req is not None:
            if req.wait_s(1, now) > 0 and self._burst_req >= 1:
                self._burst_req -= 1  # out of the coordinator's burst grant
            else:
                if req.level > req.rate * self.burst_s:  # out of a burst, not the pace
                    self._burst_seq = self._granted + 1
                req.take(1, now)
        if tok is not None and tokens:
            if tok.wait_s(tokens, now) > 0 and self._burst_tok >= tokens:
                self._burst_tok -= tokens
            else:
                if tok.level > tok.rate * self.burst_s:
                    self._burst_seq = self._granted + 1
                tok.take(tokens, now)
        self._in_flight += 1
        self._in_flight_tokens += tokens
        self._granted += 1
        self._total_wait_s += wait_s
        return Permit(self, tokens, wait_s, self._granted)

    def _next_queue(self) -> collections.deque[_Waiter] | None:
        """The queue whose head is served next (``None``: nothing waits)."""
        for queue in (self._interactive, self._waiters):
            while queue and queue[0][1].done():  # its caller was cancelled
                queue.popleft()
        if not self._interactive:
            return self._waiters or None
        if self._waiters and self._interactive_run >= self.interactive_weight:
            return self._waiters
        return self._interactive

    async def _pump(self) -> None:
        while (waiters := self._next_queue()) is not None:
            tokens, future, since = waiters[0]
            now = self.clock.now()
            if now < self._paused_until:
                await self.clock.sleep(self._paused_until - now)
                continue
            cap = self._cap(now)
            if cap is not None and self._in_flight >= cap:
                self._slot_freed.clear()
                due = self._window_due_s(now)
                timer = self.clock.call_later(due, self._slot_freed.set) if due else None
                try:
                    await self._slot_freed.wait()
                finally:
                    if timer is not None:
                        timer.cancel()
                continue
            wait = 0.0
            if self._req_bucket is not None and self._burst_req < 1:
                wait = self._req_bucket.wait_s(1, now)
            if self._tok_bucket is not None and tokens and self._burst_tok < tokens:
                wait = max(wait, self._tok_bucket.wait_s(tokens, now))
            if wait > 0:
                await self._wait_tokens(wait)
                continue
            waiters.popleft()
            if waiters is self._waiters:
                self._interactive_run = 0
            elif self._waiters:
                self._interactive_run += 1
            future.set_result(self._grant(tokens, now, now - since))

    async def _wait_tokens(self, wait_s: float) -> None:
        """Sleep until the buckets refill, or tokens come back first: a call refused
        whole (a "Request too large" 429, a 413) returns what it reserved, so a request
        larger than the bucket must not hold the queue for the debt it ran up."""
        self._tokens_back.clear()
        timer = self.clock.call_later(wait_s, self._tokens_back.set)
        try:
            await self._tokens_back.wait()
        finally:
            timer.cancel()

    def _release(self, tokens: int) -> None:
        self._in_flight -= 1
        self._in_flight_tokens -= tokens
        self._slot_freed.set()

    def _adjust_tokens(self, delta: int, *, in_flight: bool) -> None:
        if in_flight:
            self._in_flight_tokens -= delta
        bucket = self._tok_bucket
        if bucket is not None and delta:
            in_debt = bucket.level < 0
            bucket.adjust(delta)
            if delta > 0 and in_debt:  # the pump sleeps on a debt that is gone: look again
                self._tokens_back.set()

    # -- feedback from the provider -------------------------------------------------

    def observe(self, headers: Mapping[str, str], *, tokens: int = 0) -> None:
        """A successful response: count it and learn from its rate-limit headers."""
        now = self.clock.now()
        self._count_ok(now, tokens)
        first = self._first_answer()
        if self._cwnd is not None:  # slow start, then a call more per window of answers
            # (no wake-up needed: the call's release just woke a pump waiting for a slot)
            self._cwnd += 1.0 if self._cwnd < self._ssthresh else 1.0 / self._cwnd
        if self.leased:
            parsed = RateLimitHeaders.parse(headers)
            self._note_stated(parsed)
            self._bound_by_remaining(parsed, now)  # what is left is shared: never exceed it
            return
        if self.adaptive:
            self._learn_headers(RateLimitHeaders.parse(headers), now, first=first)
            self._recover(now)

    def rate_limited(
        self,
        *,
        retry_after_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        permit: Permit | None = None,
    ) -> None:
        """A 429: pause for ``retry_after_s`` and, if adaptive, cut the pace. ``permit``
        (the refused call's) tells a call sent before the last cut from one sent after."""
        now = self.clock.now()
        self._limited += 1
        first = self._first_answer()
        if self._cwnd is not None and (permit is None or permit.seq > self._cut_seq):
            self._cwnd = self._ssthresh = max(1.0, self._cwnd / 2)
            self._cut_seq = self._granted
            self._window_since = now
        parsed = RateLimitHeaders.parse(headers or {})
        pause = retry_after_s if retry_after_s is not None else parsed.retry_after_s
        if pause is not None and pause > 0:
            self._paused_until = max(self._paused_until, now + pause)
        if self.leased:  # the coordinator adapts the pace for every worker at once
            self._burst_req = self._burst_tok = 0.0  # the provider holds less than granted
            self._note_stated(parsed)
            if pause is not None:
                self._retry_after_s = max(self._retry_after_s or 0.0, pause)
            return
        if not self.adaptive:
            return
        if permit is not None and permit.seq <= self._burst_seq and self.window_s is not None:
            self._burst_refused(now)  # the window was wrong, not the pace
            return
        self._learn_headers(parsed, now, first=first)
        self._roll_window(now)
        cooldown = max(1.0, pause or 0.0)
        changed = self._requests.rate_limited(
            now, observed_per_s=self._last_ok_per_s, cooldown_s=cooldown
        )
        if parsed.remaining_tokens == 0 or self._tokens.configured is not None:
            changed |= self._tokens.rate_limited(
                now, observed_per_s=self._last_tok_per_s, cooldown_s=cooldown
            )
        if changed:
            self._apply_rates(now)

    def _burst_refused(self, now: float) -> None:
        """A call granted out of a burst was refused: the provider's real window is short
        (a per-minute limit enforced per second). Hold ``burst_s`` from now on, empty."""
        if self._short_window:
            return
        self._short_window = True
        self._req_window = self._tok_window = self.burst_s
        self._apply_rates(now)
        for bucket in (self._req_bucket, self._tok_bucket):
            if bucket is not None:
                bucket.drain(now)

    def _first_answer(self) -> bool:
        """Note that the provider answered (slow start ends); True the first time."""
        if self._answered:
            return False
        self._answered = True
        self._slot_freed.set()
        return True

    def failed(self) -> None:
        """A call failed without a rate-limit verdict (timeout, 5xx): still an answer."""
        self._first_answer()

    def _learn_headers(self, parsed: RateLimitHeaders, now: float, *, first: bool) -> None:
        changed = False
        if parsed.limit_requests is not None:
            changed |= self._requests.limit_stated(parsed.limit_requests / 60)
        if parsed.limit_tokens is not None:
            changed |= self._tokens.limit_stated(parsed.limit_tokens / 60)
        # The provider's view of what is left is the truth when it is lower than ours
        # (another client may share the key). When we just learned that our pace was
        # too high, or hear that view for the first time, calls still in flight (the
        # start-up window) will draw on that remainder too: our bucket, full since we
        # started, has counted refill the provider's did not (it was full until our
        # first requests, late on new connections, reached it).
        grew = self._learn_windows(parsed)
        if changed or grew is not None:
            self._apply_rates(now, start_full=True)  # bounded by `remaining` just below
        if grew:  # the provider holds more than we did: what it says is left is ours
            for bucket in (self._req_bucket, self._tok_bucket):
                if bucket is not None:
                    bucket.level = bucket.capacity
        self._bound_by_remaining(parsed, now, less_in_flight=changed or first or bool(grew))

    def _learn_windows(self, parsed: RateLimitHeaders) -> bool | None:
        """Learn how many seconds of its limit each of the provider's buckets holds, from
        ``remaining`` and ``reset`` (the time to refill to full): True if a bucket grew,
        False if one shrank, None if neither changed."""
        if self.window_s is None or self._short_window:
            return None
        req = self._stated_window(
            parsed.remaining_requests, parsed.reset_requests_s, self._requests
        )
        tok = self._stated_window(parsed.remaining_tokens, parsed.reset_tokens_s, self._tokens)
        grew: bool | None = None
        if req is not None and abs(req - self._req_window) > _WINDOW_CHANGE * self._req_window:
            grew = bool(grew) or req > self._req_window
            self._req_window = req
        if tok is not None and abs(tok - self._tok_window) > _WINDOW_CHANGE * self._tok_window:
            grew = bool(grew) or tok > self._tok_window
            self._tok_window = tok
        return grew

    def _stated_window(
        self, remaining: float | None, reset_s: float | None, rate: AdaptiveRate
    ) -> float | None:
        per_s = rate.stated or rate.configured or rate.rate
        if remaining is None or per_s is None or self.window_s is None:
            return None
        if reset_s is None:  # it says what is left but not how fast it refills
            return self.window_s
        return max(self.burst_s, min(self.window_s, remaining / per_s + reset_s))

    def _recover(self, now: float) -> None:
        if self._requests.recover(now) | self._tokens.recover(now):
            self._apply_rates(now)

    # -- leases ---------------------------------------------------------------------

    def set_lease(
        self,
        requests_per_min: float | None,
        tokens_per_min: float | None,
        max_concurrency: int | None = None,
        *,
        burst_requests: float = 0.0,
        burst_tokens: float = 0.0,
    ) -> None:
        """Enforce this share of a cluster-wide limit (``None``: not limited), and spend
        ``burst_*`` more at once: this worker's part of what the provider's bucket holds
        beyond the pace (the coordinator grants each part once)."""
        self._burst_req += burst_requests
        self._burst_tok += burst_tokens
        if not self.leased:
            self.leased = True
            # Several workers' bursts land on one provider bucket, jittered by the
            # network: half a second of burst each leaves the provider room for that.
            self.burst_s = min(self.burst_s, LEASED_BURST_S)
            self._req_window = self._tok_window = self.burst_s
        now = self.clock.now()
        # a share of 0 (the others hold the whole limit for now) is a trickle, not "unlimited"
        self._requests.rate = None if requests_per_min is None else max(requests_per_min / 60, 1e-3)
        self._tokens.rate = None if tokens_per_min is None else max(tokens_per_min / 60, 1e-3)
        self._apply_rates(now)
        if max_concurrency is not None:
            grew = self.max_concurrency is None or max_concurrency > self.max_concurrency
            self.max_concurrency = max_concurrency
            if grew:
                self._slot_freed.set()
        if self._waiters or self._interactive:
            # The pump may be asleep for a wait computed at the old pace: start it afresh.
            if self._pump_task is not None and not self._pump_task.done():
                self._pump_task.cancel()
            self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    def lease_report(self) -> LeaseReport:
        """Counters for the coordinator (the pause asked for is reported once)."""
        retry_after, self._retry_after_s = self._retry_after_s, None
        return LeaseReport(
            granted=self._granted,
            ok=self._ok_total,
            tokens=self._tokens_total,
            rate_limited=self._limited,
            queued=self._queued(),
            in_flight=self._in_flight,
            stated_requests_per_min=self._stated_rpm,
            stated_tokens_per_min=self._stated_tpm,
            retry_after_s=retry_after,
            remaining_requests=self._last_headers.remaining_requests,
            reset_requests_s=self._last_headers.reset_requests_s,
            remaining_tokens=self._last_headers.remaining_tokens,
            reset_tokens_s=self._last_headers.reset_tokens_s,
            burst_left_requests=self._burst_req,
            burst_left_tokens=self._burst_tok,
        )

    def _bound_by_remaining(
        self, parsed: RateLimitHeaders, now: float, *, less_in_flight: bool = False
    ) -> None:
        """Never hold more than the provider says is left (``less_in_flight``: less what
        the calls in flight reserved, as they will draw on it too)."""
        if parsed.remaining_requests is not None and self._req_bucket is not None:
            self._req_bucket.refill(now)
            left = parsed.remaining_requests - (self._in_flight if less_in_flight else 0)
            self._req_bucket.level = min(self._req_bucket.level, left)
        if parsed.remaining_tokens is not None and self._tok_bucket is not None:
            self._tok_bucket.refill(now)
            left = parsed.remaining_tokens - (self._in_flight_tokens if less_in_flight else 0)
            self._tok_bucket.level = min(self._tok_bucket.level, left)

    def _note_stated(self, parsed: RateLimitHeaders) -> None:
        if parsed.remaining_requests is not None or parsed.remaining_tokens is not None:
            self._last_headers = parsed
        if parsed.limit_requests is not None:
            self._stated_rpm = parsed.limit_requests
        if parsed.limit_tokens is not None:
            self._stated_tpm = parsed.limit_tokens

    def _count_ok(self, now: float, tokens: int) -> None:
        self._ok_total += 1
        self._tokens_total += tokens
        if self._window_start is None:
            self._window_start = now  # this answer opens the first window
            return
        self._roll_window(now)
        self._window_ok += 1
        self._window_tokens += tokens

    def _roll_window(self, now: float) -> None:
        if self._window_start is None:
            return
        elapsed = now - self._window_start
        if elapsed >= _RATE_WINDOW_S:
            self._last_ok_per_s = self._window_ok / elapsed
            self._last_tok_per_s = self._window_tokens / elapsed
            self._window_start, self._window_ok, self._window_tokens = now, 0, 0

    def _apply_rates(self, now: float, *, start_full: bool = False) -> None:
        req = self._full_pace(self._requests, self._req_window)
        tok = self._full_pace(self._tokens, self._tok_window)
        self._req_bucket = self._rebucket(self._req_bucket, req, self._req_window, now, start_full)
        self._tok_bucket = self._rebucket(self._tok_bucket, tok, self._tok_window, now, start_full)

    def _full_pace(self, rate: AdaptiveRate, window_s: float) -> float | None:
        """The pace: just under the limit, or the limit itself where the provider's
        headers confirmed a bucket deeper than ``burst_s``, since every answer's
        ``remaining`` then bounds what we hold (the margin would only waste refill)."""
        stated, pace = rate.stated, rate.rate
        if window_s > self.burst_s and stated and pace and abs(pace - stated * rate.safety) < 1e-9:
            return stated
        return pace

    def _rebucket(
        self,
        bucket: TokenBucket | None,
        rate: float | None,
        window_s: float,
        now: float,
        start_full: bool,
    ) -> TokenBucket | None:
        if rate is None:
            return None
        if bucket is None:
            # Newly limited. After a 429 start empty (we are at the provider's limit);
            # from headers start full and let their `remaining` bound the level.
            fresh = TokenBucket(rate, max(1.0, rate * window_s), now)
            if not start_full:
                fresh.level = 0.0
            return fresh
        bucket.set_rate(rate, max(1.0, rate * window_s), now)
        return bucket

    def _bucket(self, rate: float | None, now: float, *, minimum: float) -> TokenBucket | None:
        if rate is None:
            return None
        return TokenBucket(rate, max(minimum, rate * self.burst_s), now)

    # -- observability --------------------------------------------------------------

    def token_capacity(self) -> int | None:
        """The most tokens one call can be granted now (the tokens/min bucket's size),
        or ``None`` while no tokens/min limit is known: what packs of embeddings fit."""
        bucket = self._tok_bucket
        return round(bucket.capacity) if bucket is not None else None

    def _queued(self) -> int:
        return sum(1 for q in (self._waiters, self._interactive) for _, f, _ in q if not f.done())

    def state(self) -> LimiterState:
        now = self.clock.now()
        req, tok = self._requests.rate, self._tokens.rate
        return LimiterState(
            name=self.name,
            requests_per_min=req * 60 if req is not None else None,
            tokens_per_min=tok * 60 if tok is not None else None,
            configured_requests_per_min=(
                self._requests.configured * 60 if self._requests.configured else None
            ),
            configured_tokens_per_min=(
                self._tokens.configured * 60 if self._tokens.configured else None
            ),
            in_flight=self._in_flight,
            queued=self._queued(),
            granted=self._granted,
            rate_limited=self._limited,
            total_wait_s=self._total_wait_s,
            paused_s=max(0.0, self._paused_until - now),
        )

    def __repr__(self) -> str:
        s = self.state()
        return (
            f"Limiter({self.name!r}, rpm={s.requests_per_min}, tpm={s.tokens_per_min}, "
            f"in_flight={s.in_flight}, queued={s.queued})"
        )
