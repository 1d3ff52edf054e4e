"""``fanout serve``: named DAGs over HTTP for latency-sensitive callers (fanout.service)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fanout.cli._common import ConfigOpt, RayOpt, bad_input_exits, fail, group, load_cfg, trace_dir

if TYPE_CHECKING:
    from fanout.dag import DAG

__all__ = ["commands"]

commands = group()

PipelinesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="DAGs to serve (path/to/file.py:attr or module.name:attr), each under its name "
        "(none: only the OpenAI-compatible gateway over the config's models).",
        metavar="[PIPELINE]...",
        show_default=False,
    ),
]
KeysOpt = Annotated[
    Path | None,
    typer.Option(
        "--keys-db",
        envvar="FANOUT_KEYS_DB",
        help="Virtual API keys for the gateway (`fanout keys create`; $FANOUT_KEYS_DB).",
        dir_okay=False,
    ),
]
TokensFileOpt = Annotated[
    Path | None,
    typer.Option(
        help="Bearer tokens, one 'tenant:token' per line (default: $FANOUT_SERVICE_TOKENS).",
        dir_okay=False,
    ),
]


@commands.command(short_help="Serve pipelines over HTTP (API docs at /docs).")
def serve(  # one parameter per option: typer reads the signature
    pipelines: PipelinesArg = None,
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: a free one).")] = 8080,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    tokens_file: TokensFileOpt = None,
    keys_db: KeysOpt = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept requests without a token (local use only).")
    ] = False,
    tenant_concurrency: Annotated[
        int | None, typer.Option(min=1, help="Runs in flight at once per tenant (else 429).")
    ] = None,
    tenant_budget_usd: Annotated[
        float | None, typer.Option(min=0.0, help="USD each tenant may spend (else 402).")
    ] = None,
    traces: Annotated[
        Path | None,
        typer.Option("--traces", help="Directory for the trace (default: none).", file_okay=False),
    ] = None,
    ray_address: RayOpt = None,
    replicas: Annotated[int, typer.Option(min=1, help="Ray Serve replicas, with --ray.")] = 2,
    serve_ingress: Annotated[
        str,
        typer.Option(
            help="With --ray: haproxy (requests straight to the replicas, in a Ray this "
            "command starts) or proxy (Serve's Python proxy: one more hop a call).",
            metavar="haproxy|proxy",
        ),
    ] = "haproxy",
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Larger request bodies are answered 413.")
    ] = 1 << 20,
) -> None:
    """Serve pipelines over HTTP: POST /v1/pipelines/NAME/runs, OpenAPI at /docs; and
    the OpenAI-compatible gateway: POST /v1/chat/completions, GET /v1/models.

    Each PIPELINE is served under its DAG's name (and as model pipeline/NAME). Requests
    need a bearer token from --tokens-file or $FANOUT_SERVICE_TOKENS ('tenant:token'
    entries) or a virtual key of --keys-db, unless --no-auth.
    With --ray the service runs as a Ray Serve deployment whose replicas share the
    cluster-wide rate limits (needs the ray-serve extra).
    """
    from fanout._extras import require

    if (tokens_file is not None or keys_db is not None) and no_auth:
        fail("--tokens-file/--keys-db and --no-auth contradict each other; pass one")
    with bad_input_exits():
        require("fanout serve", "fastapi", "uvicorn", "sse_starlette", "prometheus_client",
                extra="serve")  # fmt: skip
        if ray_address is not None:
            require("fanout serve --ray", "ray.serve", extra="ray-serve")
        from fanout.service import TenantLimits, TokenStore, build_app, listen, serve_forever

        tokens = TokenStore.from_file(tokens_file) if tokens_file else TokenStore.from_env()
        if tokens is None and keys_db is None and not no_auth:
            fail(
                "no bearer tokens: set FANOUT_SERVICE_TOKENS, pass --tokens-file or "
                "--keys-db (or --no-auth for local use)"
            )
        keys = _keys(keys_db)
        dags = _load_dags(pipelines or [])
        limits = TenantLimits(max_concurrent=tenant_concurrency, budget_usd=tenant_budget_usd)
        trace_dir(traces)
        sock = listen(host, port)  # a port in use is an error before anything is announced
        if ray_address is not None:
            from functools import partial

            from fanout.distributed.serve import run_service

            sock.close()  # Ray Serve's proxy listens itself; the port was free a moment ago
            app = partial(build_app, dags, tokens=tokens, tenant_limits=limits,
                          max_body_bytes=max_body_bytes, keys=keys)  # fmt: skip
            run_service(app, load_cfg(config), dags.values(), address=ray_address,
                        replicas=replicas, host=host, port=port, traces=traces,
                        ingress=serve_ingress)  # fmt: skip
            return
        from fanout.run import Engine

        engine = Engine.from_config(config, traces=traces)
        service = build_app(dags, engine, tokens=tokens, tenant_limits=limits, close_runner=True,
                            max_body_bytes=max_body_bytes, keys=keys)  # fmt: skip
    names = ", ".join([*sorted(dags), "/v1/chat/completions"])
    bound = sock.getsockname()[1]
    typer.echo(f"fanout serve on http://{host}:{bound} ({names}; API docs at /docs)", err=True)
    serve_forever(service, host=host, port=bound, sock=sock)  # until SIGINT/SIGTERM


def _keys(path: Path | None) -> str | None:
    """The key store's path, checked now: a typo would otherwise serve with no keys."""
    if path is None:
        return None
    if not path.exists():
        fail(f"--keys-db {str(path)!r} does not exist; create a key with `fanout keys create`")
    from fanout.store import KeyStore

    KeyStore(path)  # a file that is not a key store is an error here
    return str(path)


def _load_dags(pipelines: list[str]) -> dict[str, DAG]:
    from fanout.batch import load_pipeline

    dags: dict[str, DAG] = {}
    for spec in pipelines:
        dag = load_pipeline(spec)
        if dag.name in dags:
            fail(f"two pipelines are named {dag.name!r}; give each DAG its own name")
        dags[dag.name] = dag
    return dags
