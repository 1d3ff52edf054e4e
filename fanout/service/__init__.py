"""The fan-out service: named DAGs over HTTP for latency-sensitive callers.

``build_app(pipelines, engine, tokens=...)`` is a FastAPI app (``POST
/v1/pipelines/{name}/runs``, ``GET /v1/pipelines``, ``/healthz``, ``/metrics``,
``/openapi.json``); ``fanout serve`` runs it under uvicorn, or on Ray Serve with
``--ray``. Deadlines return what finished (``status: "partial"``), a client that
disconnects cancels its run, and bearer tokens (per tenant) guard it.
"""

from fanout.service._app import Runner, TenantLimits, build_app
from fanout.service._auth import TOKENS_ENV, TokenStore
from fanout.service._schemas import RunRequest, RunResponse
from fanout.service._server import ServiceServer, serve_forever

__all__ = [
    "TOKENS_ENV",
    "RunRequest",
    "RunResponse",
    "Runner",
    "ServiceServer",
    "TenantLimits",
    "TokenStore",
    "build_app",
    "serve_forever",
]
