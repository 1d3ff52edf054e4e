"""The fan-out service: named DAGs over HTTP for latency-sensitive callers.

``build_app(pipelines, engine, tokens=..., keys=...)`` is a FastAPI app (``POST
/v1/pipelines/{name}/runs``, ``GET /v1/pipelines``, ``/healthz``, ``/metrics``,
``/openapi.json``) and an OpenAI-compatible gateway over the engine's model aliases
(``POST /v1/chat/completions``, ``GET /v1/models``); ``fanout serve`` runs it under
uvicorn, or on Ray Serve with ``--ray``. Deadlines return what finished (``status:
"partial"``), a client that disconnects cancels its run, and bearer tokens (per
tenant) or virtual keys (``fanout keys create``: a tenant, a budget per period, a
share of each provider limit, a priority) guard it.
"""

from fanout._extras import require

require(
    "fanout.service (the HTTP service)",
    "fastapi",
    "uvicorn",
    "sse_starlette",
    "prometheus_client",
    extra="serve",
)

# After the extra's check: a missing one is one clear error, not an ImportError.
from fanout.service._app import ChatRunner, Runner, TenantLimits, build_app  # noqa: E402
from fanout.service._auth import TOKENS_ENV, TokenStore  # noqa: E402
from fanout.service._schemas import RunRequest, RunResponse  # noqa: E402
from fanout.service._server import ServiceServer, listen, serve_forever  # noqa: E402

__all__ = [
    "TOKENS_ENV",
    "ChatRunner",
    "RunRequest",
    "RunResponse",
    "Runner",
    "ServiceServer",
    "TenantLimits",
    "TokenStore",
    "build_app",
    "listen",
    "serve_forever",
]
