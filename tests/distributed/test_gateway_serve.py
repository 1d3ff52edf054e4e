"""The gateway on Ray Serve: two replicas answer the openai SDK, and one provider limit
holds across them (their calls draw on the quota coordinator's leases)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import openai
import pytest
import ray
from ray.cluster_utils import Cluster
from support import Emulator, free_port, start_emulator

from fanout import parse_config
from fanout.distributed.serve import deploy_service, serve
from fanout.service import build_app
from fanout.sim.server import EmulatorConfig
from fanout.store import KeyStore

RPM = 600  # 10 calls/s upstream, its bucket one second deep


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(requests_per_min=RPM, latency_ms=5)) as emu:
        yield emu


@pytest.fixture(scope="module")
def gateway(
    ray_cluster: Cluster, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, dict[str, str]]]:
    keys_db = Path(tmp_path_factory.mktemp("keys")) / "keys.db"
    _, key = KeyStore(keys_db).create("acme")
    config = parse_config(
        {
            "providers": {"emu": {"kind": "openai", "base_url": emulator.base_url,
                                  "requests_per_min": RPM}},
            "models": {"fast": {"provider": "emu", "model": "sim-small"}},
        }
    )  # fmt: skip
    port = free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    names: dict[str, str] = {}
    try:
        names = deploy_service(
            partial(build_app, {}, tokens=None, keys=str(keys_db)), config, [],
            replicas=2, name="fanout-gateway-test",
        )  # fmt: skip
        yield f"http://127.0.0.1:{port}/v1", key, names
    finally:
        serve.shutdown()
        for name in names.values():
            ray.kill(ray.get_actor(name), no_restart=True)


def test_replicas_hold_their_leases_before_the_first_request(
    gateway: tuple[str, str, dict[str, str]],
) -> None:
    """A replica takes its share while it starts (Serve awaits its constructor), so no
    request waits on a coordinator's round trip."""
    _, _, names = gateway
    (coordinator,) = names.values()
    state = ray.get(ray.get_actor(coordinator).state.remote())
    assert state["workers"] == 2


def test_two_replicas_hold_one_provider_limit(
    gateway: tuple[str, str, dict[str, str]], emulator: Emulator
) -> None:
    url, key, _ = gateway
    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)
    assert [m.id for m in client.models.list()] == ["fast"]
    emulator.reset()

    def call(i: int) -> int:
        reply = client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": f"call {i}"}], max_tokens=5
        )
        return reply.usage.total_tokens if reply.usage else 0

    with ThreadPoolExecutor(max_workers=40) as pool:  # 4 s of the limit, sent at once
        tokens = list(pool.map(call, range(40)))
    assert all(t > 0 for t in tokens)  # every caller answered: no 429 passed through
    stats = emulator.stats()
    assert stats["accepted"] == 40
    assert stats["limited"] == 0  # the replicas' shares add up to the limit, never more
