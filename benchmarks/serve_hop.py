"""Where the gateway's added latency on Ray Serve goes: Ray Serve's own hop (a trivial
deployment that returns a constant, no fanout code) beside the fanout gateway, under
the Serve settings a user can choose.

Each variant runs in a fresh Ray (its ``RAY_SERVE_*`` environment is read when Serve's
processes start) and times, one call at a time with the openai SDK (keep-alive on, as
the SDK's pool does), ``--calls`` calls of each, interleaved, a round every 1/``--rate``
s (default 20: the gateway's calls at 40% of its 3,000/min limit; back to back, the
rounds would offer more than the limit and time the limiter's pacing):

  direct        the SDK straight to the emulator (no latency)
  const         a constant chat completion from plain uvicorn (no Ray): the HTTP floor
  serve-const   the same constant from a Serve deployment's ``__call__`` (no fanout code;
                like the others it reads the request's body, as the gateway must)
  serve-asgi    the same constant from a Serve deployment with an ASGI app as ingress
                (``@serve.ingress``, as the gateway's replicas are; no fanout code)
  serve-gw      the fanout gateway on Serve (2 replicas, leased limits) to the emulator

Serve's hop is serve-const - const; the gateway's added latency on Serve is
serve-gw - direct (what benchmarks/gateway.py reports).

Run: python benchmarks/serve_hop.py [--calls 500] [--rate 20] [--variants default,...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import config_dict, emulator, free_port, quantile, wait_until_up

QUIET_LOGS = {"enable_access_log": False, "log_level": "WARNING"}
VARIANTS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    # name: (environment of Ray's processes, deployment options)
    "default": ({}, {}),
    "no-access-log": ({}, {"logging_config": QUIET_LOGS}),
    "one-replica": ({}, {"replicas": 1}),
    "same-loop": (
        {
            "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
            "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
        },
        {"logging_config": QUIET_LOGS},
    ),
    "throughput-optimized": (
        {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
        {"logging_config": QUIET_LOGS},
    ),
    "haproxy": (
        {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
        {"logging_config": QUIET_LOGS},
    ),
}
_CHOICE = {"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-const",
        "object": "chat.completion",
        "created": 0,
        "model": "const",
        "choices": [_CHOICE],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
).encode()
HEADERS = [(b"content-type", b"application/json")]


async def constant_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app: every request gets the same chat completion."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": COMPLETION})


async def constant_route(request: Any) -> Any:
    from starlette.responses import Response

    await request.body()  # as the gateway must: on Serve, a call back to the proxy
    return Response(COMPLETION, media_type="application/json")


def timed(targets: dict[str, tuple[str, str]], calls: int, rate: float) -> dict[str, list[float]]:
    import openai

    clients = {
        n: openai.OpenAI(base_url=url, api_key=key or "sk-none", max_retries=0)
        for n, (url, key) in targets.items()
    }
    models = {"serve-gw": "gpt-4o-mini", "direct": "sim-small"}
    times: dict[str, list[float]] = {n: [] for n in targets}
    due = time.perf_counter()
    for i in range(calls + 30):
        if rate > 0:
            due += 1 / rate
            time.sleep(max(0.0, due - time.perf_counter()))
        for name, client in clients.items():
            start = time.perf_counter()
            client.chat.completions.create(
                model=models.get(name, "const"), max_tokens=8,
                messages=[{"role": "user", "content": f"ping {i}"}],
            )  # fmt: skip
            if i >= 30:  # warm-up: connections, imports, the limiters' first answers
                times[name].append(time.perf_counter() - start)
    return times


def child(args: argparse.Namespace) -> None:
    """One variant, in this process's fresh Ray: prints its times' quantiles as JSON."""
    import ray
    from ray import serve
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from fanout import parse_config
    from fanout.distributed.serve import deploy_service
    from fanout.service import build_app
    from fanout.store import KeyStore

    _, options = VARIANTS[args.child]
    work = Path(tempfile.mkdtemp(prefix="fanout-hop-"))
    _, key = KeyStore(work / "keys.db").create("hop")
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=512,
                      **({"logging_config": options["logging_config"]}
                         if "logging_config" in options else {}))  # fmt: skip
    class Constant:
        async def __call__(self, request: Request) -> Response:
            await request.body()
            return Response(COMPLETION, media_type="application/json")

    serve.run(Constant.bind(), name="const", route_prefix="/const")
    asgi = Starlette(routes=[Route("/v1/chat/completions", constant_route, methods=["POST"])])

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=512,
                      **({"logging_config": options["logging_config"]}
                         if "logging_config" in options else {}))  # fmt: skip
    @serve.ingress(asgi)
    class ConstantAsgi:
        pass

    serve.run(ConstantAsgi.bind(), name="asgi", route_prefix="/asgi")
    config = parse_config(config_dict(args.upstream))
    names = deploy_service(
        partial(build_app, {}, tokens=None, keys=str(work / "keys.db")), config, [],
        replicas=options.get("replicas", 2), name="hop",
        logging_config=options.get("logging_config"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz")
        times = timed(
            {"direct": (f"{args.upstream}/v1", ""), "const": (f"{args.const}/v1", ""),
             "serve-const": (f"{base}/const/v1", ""), "serve-asgi": (f"{base}/asgi/v1", ""),
             "serve-gw": (f"{base}/v1", key)},
            args.calls, args.rate,
        )  # fmt: skip
    finally:
        serve.shutdown()
        for name in names.values():
            ray.kill(ray.get_actor(name), no_restart=True)
        ray.shutdown()
    out = {f"{n}_{label}_ms": quantile(t, q) * 1000 for n, t in times.items()
           for q, label in ((0.5, "p50"), (0.99, "p99"))}  # fmt: skip
    print("RESULT " + json.dumps(out), flush=True)


def run_variant(name: str, upstream: str, const: str, calls: int, rate: float) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    env.update(VARIANTS[name][0])
    done = subprocess.run(
        [sys.executable, __file__, "--child", name, "--upstream", upstream, "--const", const,
         "--calls", str(calls), "--rate", str(rate)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, float] = json.loads(line.removeprefix("RESULT "))
            return result
    raise SystemExit(f"variant {name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="rounds a second (0: no pause)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--const", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    const_port = free_port()
    const = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "serve_hop:constant_app", "--port", str(const_port),
         "--log-level", "warning", "--no-access-log"],
        cwd=Path(__file__).resolve().parent,
    )  # fmt: skip
    try:
        with emulator("--latency-ms", "0") as upstream:
            wait_until_up(f"http://127.0.0.1:{const_port}/v1/models", const)
            for name in args.variants.split(","):
                r = run_variant(
                    name, upstream, f"http://127.0.0.1:{const_port}", args.calls, args.rate
                )
                print(json.dumps({name: r}), flush=True)
                print(
                    f"{name}: Serve's hop (serve-const - const) p50 "
                    f"{r['serve-const_p50_ms'] - r['const_p50_ms']:+.2f} ms, p99 "
                    f"{r['serve-const_p99_ms'] - r['const_p99_ms']:+.2f} ms; with ASGI ingress "
                    f"p50 {r['serve-asgi_p50_ms'] - r['const_p50_ms']:+.2f} ms, p99 "
                    f"{r['serve-asgi_p99_ms'] - r['const_p99_ms']:+.2f} ms; the gateway on "
                    f"Serve (serve-gw - direct) p50 "
                    f"{r['serve-gw_p50_ms'] - r['direct_p50_ms']:+.2f} ms, p99 "
                    f"{r['serve-gw_p99_ms'] - r['direct_p99_ms']:+.2f} ms (direct p50 "
                    f"{r['direct_p50_ms']:.2f}, const p50 {r['const_p50_ms']:.2f} ms)",
                    flush=True,
                )
    finally:
        const.terminate()
        const.wait(timeout=20)


if __name__ == "__main__":
    main()
