"""The error tree: every error fanout raises, and how retry logic classifies them.

::

    FanoutError
    ├── ConfigError              a DAG, config or input is wrong; raised before any call
    │   ├── MissingExtra         a feature needs an optional dependency: names the extra
    │   ├── TemplateError        a prompt template names a value that does not exist
    │   ├── ReviewNotFound       no review (or paused run) with that id in the store
    │   └── ReviewBusy           another process is resuming this paused run now
    ├── SessionBusy              another run holds the session (one run per session at a time)
    └── RunError                 something went wrong while a request ran
        ├── ProviderError        a provider call failed              (.retryable, .fallback_ok)
        │   ├── RateLimited      429; carries retry_after_s
        │   ├── RequestTooLarge  this request exceeds a size limit (413, "Request too large"
        │   │                    429, context length): fails alone, never retried or paused for
        │   ├── ProviderTimeout  no answer in time (.sent: the request had gone out)
        │   ├── ProviderConnectionError
        │   │   └── StreamCut    a streamed reply broke off mid-way (what arrived is discarded)
        │   ├── ProviderHTTPError  any other non-2xx; carries status_code
        │   │   └── ContentFiltered  the provider's content filter refused the prompt or reply
        │   ├── InvalidResponse  a body that is not what the API promises
        │   ├── CircuitOpen      the provider/model failed repeatedly; not called now
        │   └── ProviderOutage   down longer than a batch job waits (max_outage_s): the job stops
        ├── OutputValidationError  the reply did not validate against the node's output model
        │   └── GuardRejected    an output guard still rejected the reply after its retries
        ├── InputRefused         an input guard refused the prompt; no provider call was made
        ├── MaxStepsExceeded     an llm node's tool loop hit ``max_steps`` (transcript kept)
        ├── BudgetExceeded       a call would overrun the request's budget; it was not made
        ├── DeadlineExceeded     the request's deadline passed
        ├── ToolError            a tool callable raised
        │   └── McpServerError   an MCP server failed (.server, .retryable)
        │       ├── McpConnectionError  it could not be started or reached, or the session died
        │       └── McpTimeout   a call had no answer in time
        ├── UpstreamFailed       a node this one depends on failed
        ├── NodeFailed           a required node failed, so the request stopped
        └── ReviewRejected       a person rejected a review step's value

Retry and fallback decisions look at the type and its attributes, never at message
text. Every error pickles with its attributes (they cross Ray boundaries).
"""

from __future__ import annotations

__all__ = [
    "BudgetExceeded",
    "CircuitOpen",
    "ConfigError",
    "ContentFiltered",
    "DeadlineExceeded",
    "FanoutError",
    "GuardRejected",
    "InputRefused",
    "InvalidResponse",
    "MaxStepsExceeded",
    "McpConnectionError",
    "McpServerError",
    "McpTimeout",
    "MissingExtra",
    "NodeFailed",
    "OutputValidationError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderOutage",
    "ProviderTimeout",
    "RateLimited",
    "RequestTooLarge",
    "ReviewBusy",
    "ReviewNotFound",
    "ReviewRejected",
    "RunError",
    "SessionBusy",
    "StreamCut",
    "TemplateError",
    "ToolError",
    "UpstreamFailed",
]


class FanoutError(Exception):
    """Root of every error fanout raises."""

    def __reduce__(self) -> tuple[object, ...]:
        # Exceptions pickle as cls(*args); ours keep keyword attributes, so rebuild
        # through __new__ and restore __dict__ (which includes those attributes).
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(
    cls: type[FanoutError], args: tuple[object, ...], state: dict[str, object]
) -> FanoutError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class ConfigError(FanoutError):
    """A DAG, config file or input is wrong. Raised before any provider call is made."""


class MissingExtra(ConfigError):
    """A feature needs an optional dependency that is not installed; names the extra."""

    def __init__(self, feature: str, *, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the {extra!r} extra ({module} is not installed): "
            f"pip install 'fanout[{extra}]'"
        )
        self.extra = extra
        self.module = module


class TemplateError(ConfigError):
    """A prompt template cannot be rendered with the values it was given."""


class ReviewNotFound(ConfigError):
    """No review (or paused run) with that id in the store."""


class ReviewBusy(ConfigError):
    """Another process is resuming this paused run now (the service answers 409)."""


class SessionBusy(FanoutError):
    """Another run holds this session; raised before any call (the service answers 409)."""

    def __init__(self, message: str, *, session_id: str) -> None:
        super().__init__(message)
        self.session_id = session_id


class RunError(FanoutError):
    """Something went wrong while a request was running."""


class ProviderError(RunError):
    """A provider call failed.

    ``retryable``: the same call may succeed if tried again on the same provider.
    ``fallback_ok``: trying another model may help (false for a request that is
    invalid everywhere, such as a prompt that is too long for any model).
    """

    retryable: bool = True
    fallback_ok: bool = True
    batch: object = None  # the provider batch a batched call failed in (fanout.types.BatchRef)

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status_code = status_code
        self.headers = headers or {}  # rate-limit headers of the failed response


class RateLimited(ProviderError):
    """The provider answered 429; ``retry_after_s`` is its hint, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=429, headers=headers)
        self.retry_after_s = retry_after_s


class RequestTooLarge(ProviderError):
    """This request is larger than a limit of the model or the provider: a "Request too
    large" 429 (more tokens than the tokens/min bucket holds), a 413, a context-length 400.

    The error belongs to this request alone: it is never retried on the same model and
    never pauses other calls or counts as a rate-limit signal. ``kind`` is
    ``tokens_per_min``, ``context_length`` or ``body_size``; ``requested`` and ``limit``
    are what the provider said (``None`` if it did not). Another model of the fallback
    chain (a larger window) may take it.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        kind: str = "",
        requested: int | None = None,
        limit: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code, headers=headers)
        self.kind = kind
        self.requested = requested
        self.limit = limit


class ProviderTimeout(ProviderError):
    """The provider did not answer within the timeout.

    ``sent``: the request had gone out, so the provider may have run (and billed) it;
    its cost is counted as spent at the call's estimate."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        sent: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, provider=provider, headers=headers)
        self.sent = sent


class ProviderConnectionError(ProviderError):
    """The connection to the provider failed or was reset."""


class StreamCut(ProviderConnectionError):
    """A streamed reply ended before its last event (the connection broke, or the body
    ended without ``[DONE]``); the text that arrived is discarded and the call retried
    as a whole. ``chunks``: the content chunks that had arrived."""

    def __init__(self, message: str, *, provider: str = "", chunks: int = 0) -> None:
        super().__init__(message, provider=provider)
        self.chunks = chunks


class ProviderHTTPError(ProviderError):
    """The provider answered with a non-2xx status other than 429."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        retryable: bool | None = None,
        fallback_ok: bool | None = None,
        content_filter: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code, headers=headers)
        self.content_filter = content_filter
        code = status_code or 0
        # 5xx and 408/409 are transient; other 4xx are the request's or the key's fault.
        self.retryable = code >= 500 or code in (408, 409) if retryable is None else retryable
        # A 400 would fail on every model (a content filter is the provider's own
        # policy, so another model may answer); auth, missing model and 5xx may not.
        default_fallback = code != 400 or content_filter
        self.fallback_ok = default_fallback if fallback_ok is None else fallback_ok


class ContentFiltered(ProviderHTTPError):
    """The provider's content filter refused the prompt, or cut the reply (Azure's
    ``content_filter`` 400 or finish reason, a Gemini prompt blocked for safety).

    Fails this request alone: never retried on the same model, no sign of the provider's
    health, but another model of the fallback chain (another policy) may answer."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            message, provider=provider, status_code=status_code, retryable=False,
            fallback_ok=True, content_filter=True, headers=headers,
        )  # fmt: skip


class InvalidResponse(ProviderError):
    """The provider's answer is malformed (bad JSON, missing fields, truncated)."""


class CircuitOpen(ProviderError):
    """The circuit of this provider/model is open: it was not called; try a fallback.

    ``cause`` is the failure that opened it (``ErrorType: message``)."""

    retryable = False

    def __init__(self, message: str, *, provider: str = "", cause: str = "") -> None:
        super().__init__(message, provider=provider)
        self.cause = cause


class ProviderOutage(ProviderError):
    """A provider/model has been down (connection errors, an open circuit) longer than a
    batch job waits for it (``max_outage_s``). Not an error of any record: the job stops,
    resumably, and the records that waited run again on the next run.

    ``name`` is the provider/model, ``down_s`` how long it has been down and ``cause``
    the failure that took it down (``ErrorType: message``)."""

    retryable = False
    fallback_ok = False

    def __init__(
        self, message: str, *, provider: str = "", name: str = "", down_s: float = 0.0,
        cause: str = "",
    ) -> None:  # fmt: skip
        super().__init__(message, provider=provider)
        self.name = name
        self.down_s = down_s
        self.cause = cause


class OutputValidationError(RunError):
    """The model's reply did not validate against the node's output model."""


class GuardRejected(OutputValidationError):
    """An output guard rejected the reply on every try of every model of the chain.

    ``guard`` names the guard, ``reason`` is what it said last. Unlike a validation
    failure, a rejection moves on to the node's fallback models before it escalates.
    """

    def __init__(self, message: str, *, guard: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.guard = guard
        self.reason = reason


class InputRefused(RunError):
    """An input guard refused the node's prompt, so no provider call was made."""

    def __init__(self, message: str, *, guard: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.guard = guard
        self.reason = reason


class MaxStepsExceeded(RunError):
    """An llm node's model kept calling tools after ``max_steps`` turns; the loop ended.

    The node's status is ``max_steps_exceeded`` and its transcript is kept.
    """

    def __init__(self, message: str, *, max_steps: int = 0) -> None:
        super().__init__(message)
        self.max_steps = max_steps


class BudgetExceeded(RunError):
    """The next call would overrun the request's budget, so it was not made."""

    def __init__(
        self, message: str, *, limit: float = 0.0, needed: float = 0.0, unit: str = ""
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.needed = needed
        self.unit = unit


class DeadlineExceeded(RunError):
    """The request's deadline passed before this node finished."""


class ToolError(RunError):
    """A tool callable raised; the original error's type and text are in the message."""


class McpServerError(ToolError):
    """An MCP server (not its tool) failed; ``retryable``: a new attempt may succeed."""

    retryable = False

    def __init__(self, message: str, *, server: str = "") -> None:
        super().__init__(message)
        self.server = server


class McpConnectionError(McpServerError):
    """The MCP server could not be started or reached, or its session died."""

    retryable = True


class McpTimeout(McpServerError):
    """An MCP call had no answer within the server's ``timeout_s``."""

    retryable = True


class UpstreamFailed(RunError):
    """A node this node depends on failed, so this node could not run."""

    def __init__(self, message: str, *, upstream: str = "") -> None:
        super().__init__(message)
        self.upstream = upstream


class NodeFailed(RunError):
    """A node marked ``required`` failed, so the whole request was stopped."""

    def __init__(self, message: str, *, node_id: str = "") -> None:
        super().__init__(message)
        self.node_id = node_id


class ReviewRejected(RunError):
    """A person rejected the value of a review step; the step fails with their reason."""
