"""``Client`` and ``AsyncClient``: the pipeline API of ``fanout serve`` from Python.

``run(name, inputs)`` answers a :class:`PipelineRun`; ``stream(name, inputs)`` yields a
:class:`NodeReport` per finished node, then the :class:`PipelineRun`. ``deadline_ms``
goes to the service (which answers what finished by then) and bounds the wait here;
a 429 or 503 (and a connection that could not be made) is tried again after the
service's ``Retry-After`` (else an exponential back-off), up to ``max_retries`` times
and never past the deadline: the service refused those before running anything, so a
retry cannot run a pipeline twice. Cancelling the awaiting task (or interrupting a
blocking call) closes the connection, and the service cancels the run and its calls.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Literal

import httpx
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from fanout.client._types import NodeReport, PipelineInfo, PipelineRun, ServiceError

__all__ = ["AsyncClient", "Client"]

_RETRIED = frozenset({429, 503})
_MARGIN_S = 5.0  # past the deadline, for the service to answer what finished
Priority = Literal["interactive", "batch"]


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 (got {max_retries})")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._headers = {"authorization": f"Bearer {token}"} if token else {}

    def _body(
        self,
        inputs: Mapping[str, object],
        *,
        stream: bool,
        deadline_ms: int | None,
        budget_usd: float | None,
        budget_tokens: int | None,
        priority: Priority,
        session_id: str | None,
    ) -> dict[str, object]:
        body: dict[str, object] = {"inputs": dict(inputs), "stream": stream, "priority": priority}
        if deadline_ms is not None:
            body["deadline_ms"] = deadline_ms
        if budget_usd is not None or budget_tokens is not None:
            body["budget"] = {"usd": budget_usd, "tokens": budget_tokens}
        if session_id is not None:
            body["session_id"] = session_id
        return body

    def _timeout(self, deadline_ms: int | None) -> httpx.Timeout:
        read = self.timeout_s if deadline_ms is None else deadline_ms / 1000 + _MARGIN_S
        return httpx.Timeout(read, connect=min(10.0, read))

    def _retry_policy(self, deadline_ms: int | None) -> dict[str, Any]:
        ends = time.monotonic() + deadline_ms / 1000 if deadline_ms is not None else None

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            hinted = error.retry_after_s if isinstance(error, ServiceError) else None
            backoff = self.backoff_s * 2 ** (state.attempt_number - 1)
            seconds = min(self.max_backoff_s, hinted if hinted is not None else backoff)
            if ends is not None and time.monotonic() + seconds >= ends:
                raise error if error is not None else TimeoutError()  # no time for another
            return seconds

        return {
            "stop": stop_after_attempt(self.max_retries + 1),
            "wait": wait,
            "retry": retry_if_exception(_retryable),
            "reraise": True,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"  # never the token


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ServiceError):
        return exc.status in _RETRIED
    return isinstance(exc, httpx.ConnectError)  # nothing was sent


def _retry_after_s(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)  # an HTTP date
        return max(0.0, when.timestamp() - time.time())


def _error(status: int, headers: httpx.Headers, raw: bytes) -> ServiceError:
    try:
        error = orjson.loads(raw).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    message = str(error.get("message") or raw[:200].decode("utf-8", "replace") or status)
    return ServiceError(
        f"{status}: {message}",
        status=status,
        kind=str(error.get("type") or ""),
        fields=list(error.get("fields") or []),
        retry_after_s=_retry_after_s(headers),
    )


class _Events:
    """Server-sent events, line by line: ``(event, data)`` once each event is complete."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        line = line.rstrip("\r")
        if not line:
            if not self.data:
                return None
            done = (self.event, "\n".join(self.data))
            self.event, self.data = "message", []
            return done
        if line.startswith(":"):  # a ping
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


def _event(kind: str, data: str) -> NodeReport | PipelineRun | None:
    if kind == "node":
        return NodeReport.model_validate_json(data)
    if kind == "result":
        return PipelineRun.model_validate_json(data)
    if kind == "error":
        error = orjson.loads(data).get("error") or {}
        raise ServiceError(str(error.get("message")), status=200, kind=str(error.get("type")))
    return None


class AsyncClient(_Base):
    """The pipeline API over an ``httpx.AsyncClient`` (``transport``: another transport,
    ``httpx.ASGITransport(app)`` to call an app in-process)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url, token=token, timeout_s=timeout_s, max_retries=max_retries,
            backoff_s=backoff_s, max_backoff_s=max_backoff_s,
        )  # fmt: skip
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, transport=transport
        )

    async def pipelines(self) -> list[PipelineInfo]:
        response = await self._http.get("/v1/pipelines", timeout=self.timeout_s)
        if response.status_code != 200:
            raise _error(response.status_code, response.headers, response.content)
        return [PipelineInfo.model_validate(p) for p in response.json()]

    async def run(
        self,
        pipeline: str,
        inputs: Mapping[str, object],
        *,
        deadline_ms: int | None = None,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        priority: Priority = "interactive",
        session_id: str | None = None,
    ) -> PipelineRun:
        """One run of ``pipeline``; raises :class:`ServiceError` if it was refused."""
        body = self._body(
            inputs, stream=False, deadline_ms=deadline_ms, budget_usd=budget_usd,
            budget_tokens=budget_tokens, priority=priority, session_id=session_id,
        )  # fmt: skip
        async for attempt in AsyncRetrying(**self._retry_policy(deadline_ms)):
            with attempt:
                response = await self._http.post(
                    f"/v1/pipelines/{pipeline}/runs", json=body, timeout=self._timeout(deadline_ms)
                )
                if response.status_code != 200:
                    raise _error(response.status_code, response.headers, response.content)
                return PipelineRun.model_validate_json(response.content)
        raise AssertionError("unreachable: tenacity re-raises")

    async def stream(
        self,
        pipeline: str,
        inputs: Mapping[str, object],
        *,
        deadline_ms: int | None = None,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        priority: Priority = "interactive",
        session_id: str | None = None,
    ) -> AsyncIterator[NodeReport | PipelineRun]:
        """A :class:`NodeReport` per node as it finishes, then the :class:`PipelineRun`.
        Leaving the loop early (or cancelling) closes the stream: the run is cancelled."""
        body = self._body(
            inputs, stream=True, deadline_ms=deadline_ms, budget_usd=budget_usd,
            budget_tokens=budget_tokens, priority=priority, session_id=session_id,
        )  # fmt: skip
        request = self._http.build_request(
            "POST", f"/v1/pipelines/{pipeline}/runs", json=body, timeout=self._timeout(deadline_ms)
        )
        response = None
        async for attempt in AsyncRetrying(**self._retry_policy(deadline_ms)):
            with attempt:
                response = await self._http.send(request, stream=True)
                if response.status_code != 200:
                    raw = await response.aread()
                    await response.aclose()
                    raise _error(response.status_code, response.headers, raw)
        assert response is not None
        try:
            events = _Events()
            async for line in response.aiter_lines():
                done = events.feed(line)
                item = _event(*done) if done is not None else None
                if item is not None:
                    yield item
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Client(_Base):
    """The pipeline API, blocking (an ``httpx.Client``; ``transport``: another one)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url, token=token, timeout_s=timeout_s, max_retries=max_retries,
            backoff_s=backoff_s, max_backoff_s=max_backoff_s,
        )  # fmt: skip
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, transport=transport
        )

    def pipelines(self) -> list[PipelineInfo]:
        response = self._http.get("/v1/pipelines", timeout=self.timeout_s)
        if response.status_code != 200:
            raise _error(response.status_code, response.headers, response.content)
        return [PipelineInfo.model_validate(p) for p in response.json()]

    def run(
        self,
        pipeline: str,
        inputs: Mapping[str, object],
        *,
        deadline_ms: int | None = None,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        priority: Priority = "interactive",
        session_id: str | None = None,
    ) -> PipelineRun:
        """One run of ``pipeline``; raises :class:`ServiceError` if it was refused."""
        body = self._body(
            inputs, stream=False, deadline_ms=deadline_ms, budget_usd=budget_usd,
            budget_tokens=budget_tokens, priority=priority, session_id=session_id,
        )  # fmt: skip
        for attempt in Retrying(**self._retry_policy(deadline_ms)):
            with attempt:
                response = self._http.post(
                    f"/v1/pipelines/{pipeline}/runs", json=body, timeout=self._timeout(deadline_ms)
                )
                if response.status_code != 200:
                    raise _error(response.status_code, response.headers, response.content)
                return PipelineRun.model_validate_json(response.content)
        raise AssertionError("unreachable: tenacity re-raises")

    def stream(
        self,
        pipeline: str,
        inputs: Mapping[str, object],
        *,
        deadline_ms: int | None = None,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        priority: Priority = "interactive",
        session_id: str | None = None,
    ) -> Iterator[NodeReport | PipelineRun]:
        """A :class:`NodeReport` per node as it finishes, then the :class:`PipelineRun`."""
        body = self._body(
            inputs, stream=True, deadline_ms=deadline_ms, budget_usd=budget_usd,
            budget_tokens=budget_tokens, priority=priority, session_id=session_id,
        )  # fmt: skip
        request = self._http.build_request(
            "POST", f"/v1/pipelines/{pipeline}/runs", json=body, timeout=self._timeout(deadline_ms)
        )
        response = None
        for attempt in Retrying(**self._retry_policy(deadline_ms)):
            with attempt:
                response = self._http.send(request, stream=True)
                if response.status_code != 200:
                    raw = response.read()
                    response.close()
                    raise _error(response.status_code, response.headers, raw)
        assert response is not None
        try:
            events = _Events()
            for line in response.iter_lines():
                done = events.feed(line)
                item = _event(*done) if done is not None else None
                if item is not None:
                    yield item
        finally:
            response.close()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
