"""The OpenAI-compatible gateway: a provider limit held across Ray Serve replicas, and the
latency the gateway adds to a call.

throughput  ``fanout sim-server --rpm 3000`` (one upstream limit: 50 calls/s, its
            bucket one second deep) behind 2 gateway replicas on Ray Serve (each
            leasing its share of the limit from the quota coordinator), driven by 4
            client processes with the openai SDK (a virtual key each, ``--concurrency``
            calls in flight per process: far more than the limit admits). Over the
            ``--duration`` window after ``--warmup`` seconds, from the emulator's own
            per-second counts:
              target  accepted calls/s >= 0.95 x 50,  upstream 429s <= 1% of calls
latency     at low load (one call at a time, ``--latency-calls`` of each, interleaved,
            a round every 1/``--latency-rate`` s: 20 gateway calls/s, 40% of the same
            3,000/min limit), the openai SDK straight to the emulator vs. through the
            gateway to it: the gateway's added latency at p50 and p99, for ``fanout
            serve`` (uvicorn, one process) and for the Ray Serve deployment (through
            ``--serve-ingress``: HAProxy, as ``fanout serve --ray`` starts it, or Serve's
            Python proxy). Unpaced, one call at a time would offer more than the limit
            and time the limiter's pacing, not the gateway.
              target  added p50 <= 2 ms, p99 <= 10 ms
ttft        streamed calls (``stream=True``, one at a time, ``--ttft-calls`` of each,
            interleaved) to an emulator that sends a piece of text every
            ``--per-token-ms`` a token after ``--ttft-latency-ms``: the time to the
            first content chunk, straight to the emulator vs. through ``fanout serve``
            (one process), and the whole stream's time (what the first token waited
            for when the gateway built its stream from the completed answer).

Both Ray parts run Serve with ``--serve-ingress`` (default haproxy). ``--replica-direct``
(haproxy): the latency part also calls one replica's own HTTP server, interleaved with
the others: the gateway on Serve without HAProxy's hop.

Run: python benchmarks/gateway.py [--duration 60] [--warmup 10] [--concurrency 24]
     [--latency-calls 1000] [--latency-rate 20] [--ttft-calls 200]
     [--serve-ingress haproxy|proxy] [--replica-direct] [--parts throughput,latency,ttft]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RPM = 3000
REPLICAS = 2
CLIENTS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.get(url, timeout=5).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or (process is not None and process.poll() is not None):
                raise SystemExit(f"{url} did not come up") from None
            time.sleep(0.1)


@contextmanager
def emulator(*args: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "sim-server", "--port", str(port), *args],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/stats", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def config_dict(upstream: str) -> dict[str, object]:
    return {
        "providers": {
            "emu": {"kind": "openai", "base_url": f"{upstream}/v1", "requests_per_min": RPM,
                    "max_concurrency": 512}
        },
        "models": {"gpt-4o-mini": {"provider": "emu", "model": "sim-small",
                                   "input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6}},
    }  # fmt: skip


def config_toml(upstream: str) -> str:
    return (
        f'[providers.emu]\nkind = "openai"\nbase_url = "{upstream}/v1"\n'
        f"requests_per_min = {RPM}\nmax_concurrency = 512\n"
        '[models."gpt-4o-mini"]\nprovider = "emu"\nmodel = "sim-small"\n'
        "input_usd_per_mtok = 0.15\noutput_usd_per_mtok = 0.6\n"
    )


def client_process(url: str, key: str, concurrency: int, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """One client process: ``concurrency`` threads, each calling in a loop for ``seconds``."""
    import threading

    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)
    counts = {"ok": 0, "error": 0}
    lock = threading.Lock()
    ends = time.monotonic() + seconds

    def loop(worker: int) -> None:
        n = 0
        while time.monotonic() < ends:
            n += 1
            try:
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": f"w{worker} call {n}"}],
                    max_tokens=8,
                )
                outcome = "ok"
            except openai.APIError as exc:
                outcome = f"error {getattr(exc, 'status_code', type(exc).__name__)}"
            with lock:
                counts[outcome] = counts.get(outcome, 0) + 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(counts)


def throughput(args: argparse.Namespace) -> dict[str, float]:
    import ray

    from fanout import parse_config
    from fanout.distributed.serve import deploy_service, serve
    from fanout.service import build_app
    from fanout.store import KeyStore

    with emulator("--rpm", str(RPM), "--latency-ms", str(args.latency_ms)) as upstream:
        keys_db = Path(tempfile.mkdtemp(prefix="fanout-gw-")) / "keys.db"
        store = KeyStore(keys_db)
        keys = [store.create(f"tenant-{i}")[1] for i in range(CLIENTS)]
        port = free_port()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        config = parse_config(config_dict(upstream))
        names = deploy_service(
            partial(build_app, {}, tokens=None, keys=str(keys_db)), config, [],
            replicas=REPLICAS, name="gateway-bench",
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{url}/healthz")
            httpx.post(f"{upstream}/stats/reset").raise_for_status()
            seconds = args.warmup + args.duration
            queue: mp.Queue = mp.get_context("spawn").Queue()  # type: ignore[type-arg]
            ctx = mp.get_context("spawn")
            procs = [
                ctx.Process(target=client_process, args=(url, k, args.concurrency, seconds, queue))
                for k in keys
            ]
            for proc in procs:
                proc.start()
            results = [queue.get(timeout=seconds + 300) for _ in procs]
            for proc in procs:
                proc.join()
            stats = httpx.get(f"{upstream}/stats").json()
        finally:
            serve.shutdown()
            for name in names.values():
                ray.kill(ray.get_actor(name), no_restart=True)
            ray.shutdown()
    window = [s for s in stats["per_second"]
              if args.warmup <= s["second"] < args.warmup + args.duration]  # fmt: skip
    accepted = sum(s["accepted"] for s in window)
    limited = sum(s["limited"] for s in window)
    ceiling = RPM / 60 * len(window)
    client_counts: dict[str, int] = {}
    for counts in results:
        for name, value in counts.items():
            client_counts[name] = client_counts.get(name, 0) + value
    per_s = sorted(s["accepted"] for s in window)
    return {
        "window_s": len(window),
        "accepted_per_s_p10": float(per_s[len(per_s) // 10]) if per_s else 0.0,
        "accepted_per_s_median": float(per_s[len(per_s) // 2]) if per_s else 0.0,
        "accepted_per_s": accepted / max(1, len(window)),
        "ceiling_per_s": RPM / 60,
        "of_ceiling": accepted / ceiling if ceiling else 0.0,
        "upstream_429_share": limited / max(1, accepted + limited),
        "upstream_429": limited,
        "client_ok": client_counts.get("ok", 0),
        "client_errors": sum(v for k, v in client_counts.items() if k != "ok"),
    }


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def timed_calls(
    targets: dict[str, tuple[str, str, str]], calls: int, rate: float = 0.0
) -> dict[str, list[float]]:
    """``calls`` sequential calls to each target (base URL, key, model), interleaved; a
    round of them every 1/``rate`` s (0: back to back)."""
    import openai

    clients = {
        name: openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
        for name, (base, key, _) in targets.items()
    }
    times: dict[str, list[float]] = {name: [] for name in targets}
    due = time.perf_counter()
    for i in range(calls + 50):
        if rate > 0:
            due += 1 / rate
            time.sleep(max(0.0, due - time.perf_counter()))
        for name, client in clients.items():
            start = time.perf_counter()
            client.chat.completions.create(
                model=targets[name][2], messages=[{"role": "user", "content": f"ping {i}"}],
                max_tokens=8,
            )  # fmt: skip
            if i >= 50:  # warm-up: connections, imports, the limiters' first answers
                times[name].append(time.perf_counter() - start)
    return times


def latency(args: argparse.Namespace) -> dict[str, float]:
    import ray

    from fanout import parse_config
    from fanout.distributed.serve import deploy_service, serve
    from fanout.service import build_app
    from fanout.store import KeyStore

    with emulator("--latency-ms", "0") as upstream:
        work = Path(tempfile.mkdtemp(prefix="fanout-gw-"))
        store = KeyStore(work / "keys.db")
        _, key = store.create("latency")
        (work / "fanout.toml").write_text(config_toml(upstream))  # the limit Ray Serve has
        port = free_port()
        env = {**os.environ, "FANOUT_KEYS_DB": str(work / "keys.db")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "serve", "--config", str(work / "fanout.toml"),
             "--port", str(port)], env=env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz", proc)
            local = timed_calls(
                {"direct": (upstream, "sk-none", "sim-small"),
                 "gateway": (f"http://127.0.0.1:{port}", key, "gpt-4o-mini")},
                args.latency_calls, args.latency_rate,
            )  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        ray_port = free_port()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1",
                                                             "port": ray_port})  # fmt: skip
        config = parse_config(config_dict(upstream))
        names = deploy_service(
            partial(build_app, {}, tokens=None, keys=str(work / "keys.db")), config, [],
            replicas=REPLICAS, name="gateway-latency",
        )  # fmt: skip
        try:
            wait_until_up(f"http://127.0.0.1:{ray_port}/healthz")
            targets = {"direct": (upstream, "sk-none", "sim-small"),
                       "gateway": (f"http://127.0.0.1:{ray_port}", key, "gpt-4o-mini")}  # fmt: skip
            if args.replica_direct:  # HAProxy's hop apart: one replica's own HTTP server
                targets["replica"] = (one_replica(), key, "gpt-4o-mini")
            on_ray = timed_calls(targets, args.latency_calls, args.latency_rate)
        finally:
            serve.shutdown()
            for name in names.values():
                ray.kill(ray.get_actor(name), no_restart=True)
            ray.shutdown()
    out: dict[str, float] = {}
    for where, times in (("serve", local), ("ray", on_ray)):
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            direct, via = quantile(times["direct"], q), quantile(times["gateway"], q)
            out[f"{where}_direct_{label}_ms"] = direct * 1000
            out[f"{where}_gateway_{label}_ms"] = via * 1000
            out[f"{where}_added_{label}_ms"] = (via - direct) * 1000
            if "replica" in times:
                out[f"{where}_replica_added_{label}_ms"] = (
                    quantile(times["replica"], q) - direct
                ) * 1000
    return out


def one_replica() -> str:
    """The base URL of a replica's own HTTP server, from the config Serve wrote for HAProxy
    (in the directory ``haproxy_places`` gave it)."""
    import re

    files = Path(os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]).parent
    (config,) = files.glob("*/haproxy.cfg")  # DIR/NODE_ID/haproxy.cfg: one node
    servers = re.findall(r"^\s*server SERVE_REPLICA\S* (\S+):(\d+)", config.read_text(), re.M)
    host, port = servers[0]
    return f"http://{host}:{port}"


def streamed_calls(
    targets: dict[str, tuple[str, str, str]], calls: int
) -> dict[str, tuple[list[float], list[float]]]:
    """``calls`` streamed calls to each target, interleaved: (first-token, whole) times."""
    import openai

    clients = {
        name: openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
        for name, (base, key, _) in targets.items()
    }
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in targets}
    for i in range(calls + 10):
        for name, client in clients.items():
            start = time.perf_counter()
            first = None
            stream = client.chat.completions.create(
                model=targets[name][2], stream=True, max_tokens=40,
                messages=[{"role": "user", "content": f"tell a story {i}"}],
            )  # fmt: skip
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - start
            whole = time.perf_counter() - start
            if i >= 10 and first is not None:  # warm-up: connections, the limiters
                times[name][0].append(first)
                times[name][1].append(whole)
    return times


def ttft(args: argparse.Namespace) -> dict[str, float]:
    from fanout.store import KeyStore

    with emulator(
        "--latency-ms", str(args.ttft_latency_ms), "--latency-per-token-ms",
        str(args.per_token_ms),
    ) as upstream:  # fmt: skip
        work = Path(tempfile.mkdtemp(prefix="fanout-gw-"))
        _, key = KeyStore(work / "keys.db").create("ttft")
        (work / "fanout.toml").write_text(config_toml(upstream).replace(
            f"requests_per_min = {RPM}\n", ""))  # fmt: skip
        port = free_port()
        env = {**os.environ, "FANOUT_KEYS_DB": str(work / "keys.db")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "serve", "--config", str(work / "fanout.toml"),
             "--port", str(port)], env=env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz", proc)
            times = streamed_calls(
                {"direct": (upstream, "sk-none", "sim-small"),
                 "gateway": (f"http://127.0.0.1:{port}", key, "gpt-4o-mini")},
                args.ttft_calls,
            )  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    out: dict[str, float] = {"calls": float(len(times["gateway"][0]))}
    for name, (firsts, wholes) in times.items():
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            out[f"{name}_ttft_{label}_ms"] = quantile(firsts, q) * 1000
            out[f"{name}_whole_{label}_ms"] = quantile(wholes, q) * 1000
    for label in ("p50", "p99"):
        via, direct = out[f"gateway_ttft_{label}_ms"], out[f"direct_ttft_{label}_ms"]
        out[f"added_ttft_{label}_ms"] = via - direct
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=24, help="calls in flight per client")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="upstream latency")
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument("--latency-rate", type=float, default=20.0,
                        help="rounds of latency calls a second (0: back to back)")  # fmt: skip
    parser.add_argument("--serve-ingress", choices=("haproxy", "proxy"), default="haproxy")
    parser.add_argument("--replica-direct", action="store_true",
                        help="latency: also call one replica straight (haproxy)")  # fmt: skip
    parser.add_argument("--ttft-calls", type=int, default=200)
    parser.add_argument("--ttft-latency-ms", type=float, default=20.0, help="to the first piece")
    parser.add_argument("--per-token-ms", type=float, default=5.0, help="between pieces")
    parser.add_argument("--parts", default="throughput,latency,ttft")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if args.replica_direct and args.serve_ingress != "haproxy":
        raise SystemExit("--replica-direct needs --serve-ingress haproxy (replicas' own ports)")
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with ExitStack() as stack:
        if args.serve_ingress == "haproxy":  # before any Ray starts: Serve reads it then
            from fanout.distributed.serve import haproxy_places, use_haproxy_ingress

            if not use_haproxy_ingress():
                raise SystemExit("no HAProxy binary for Ray Serve here; pass --serve-ingress proxy")
            stack.enter_context(haproxy_places())  # its own ports and files, as fanout serve's
        print(f"Ray Serve ingress: {args.serve_ingress}")
        run_parts(args, parts)


def run_parts(args: argparse.Namespace, parts: list[str]) -> None:
    if "throughput" in parts:
        t = throughput(args)
        print(json.dumps({"throughput": t}))
        print(
            f"throughput: {t['accepted_per_s']:.2f} calls/s accepted upstream of a "
            f"{t['ceiling_per_s']:.0f}/s limit = {t['of_ceiling']:.3f} of the ceiling "
            f"(target >= 0.95); upstream 429s {t['upstream_429']} = "
            f"{t['upstream_429_share']:.2%} of calls (target <= 1%); {REPLICAS} replicas, "
            f"{CLIENTS} client processes x {args.concurrency}, {t['window_s']} s window "
            f"(per second: median {t['accepted_per_s_median']:.0f}, "
            f"p10 {t['accepted_per_s_p10']:.0f}); "
            f"clients: {t['client_ok']} ok, {t['client_errors']} errors"
        )
    if "latency" in parts:
        lat = latency(args)
        print(json.dumps({"latency": lat}))
        for where, name in (
            ("serve", "fanout serve (uvicorn)"),
            ("ray", f"Ray Serve ({args.serve_ingress})"),
        ):
            print(
                f"added latency, {name}: p50 {lat[f'{where}_added_p50_ms']:.2f} ms, p99 "
                f"{lat[f'{where}_added_p99_ms']:.2f} ms (direct p50 "
                f"{lat[f'{where}_direct_p50_ms']:.2f} / p99 {lat[f'{where}_direct_p99_ms']:.2f}"
                f" ms; targets: p50 <= 2 ms, p99 <= 10 ms)"
            )
        if "ray_replica_added_p50_ms" in lat:
            print(
                f"added latency, straight to one replica's port (no HAProxy): p50 "
                f"{lat['ray_replica_added_p50_ms']:.2f} ms, p99 "
                f"{lat['ray_replica_added_p99_ms']:.2f} ms"
            )

    if "ttft" in parts:
        t = ttft(args)
        print(json.dumps({"ttft": t}))
        print(
            f"time to first token, {t['calls']:.0f} streamed calls each: direct p50 "
            f"{t['direct_ttft_p50_ms']:.2f} / p99 {t['direct_ttft_p99_ms']:.2f} ms; through "
            f"fanout serve p50 {t['gateway_ttft_p50_ms']:.2f} / p99 "
            f"{t['gateway_ttft_p99_ms']:.2f} ms (added p50 {t['added_ttft_p50_ms']:.2f}, p99 "
            f"{t['added_ttft_p99_ms']:.2f} ms); the whole stream: direct p50 "
            f"{t['direct_whole_p50_ms']:.1f} ms, through the gateway p50 "
            f"{t['gateway_whole_p50_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
