"""``batch_clients``: the HTTP client ``fanout run`` gives providers that name none."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from fanout import parse_config
from fanout.batch import batch_clients
from fanout.cli._jobs import _local_engine
from fanout.config import Config

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pyreqwest") is None, reason="the reqwest extra"
)


def _config(**providers: dict[str, Any]) -> Config:
    models: dict[str, Any] = {
        f"m-{name}": {"provider": name, "model": "sim-small"} for name in providers
    }
    return parse_config({"providers": providers, "models": models})


def test_a_provider_naming_no_client_gets_pyreqwest_and_one_naming_its_client_keeps_it() -> None:
    config = _config(
        plain={"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
        chosen={"kind": "anthropic", "base_url": "http://127.0.0.1:9/v1",
                "http_client": "aiohttp"},
        sim={"kind": "sim"},
    )  # fmt: skip
    clients = batch_clients(config).providers
    assert clients["plain"].http_client == "reqwest"  # type: ignore[union-attr]
    assert clients["chosen"].http_client == "aiohttp"  # type: ignore[union-attr]
    assert clients["sim"] is config.providers["sim"]
    assert config.providers["plain"].http_client == "aiohttp"  # type: ignore[union-attr]


def test_a_provider_with_a_hedged_model_keeps_aiohttp() -> None:
    config = parse_config(
        {
            "providers": {
                "hedged": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
                "plain": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
            },
            "models": {
                "fast": {"provider": "hedged", "model": "a", "hedge": {"quantile": 0.9}},
                "other": {"provider": "plain", "model": "b"},
            },
        }
    )
    clients = batch_clients(config).providers
    assert clients["hedged"].http_client == "aiohttp"  # type: ignore[union-attr]
    assert clients["plain"].http_client == "reqwest"  # type: ignore[union-attr]


def test_nothing_to_change_is_the_same_config() -> None:
    config = _config(sim={"kind": "sim"})
    assert batch_clients(config) is config


def test_fanout_runs_local_engine_uses_it(tmp_path: Path) -> None:
    path = tmp_path / "fanout.toml"
    path.write_text(
        '[providers.emu]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
        '[models.fast]\nprovider = "emu"\nmodel = "sim-small"\n'
    )
    engine = _local_engine(path, None, (None, None))
    assert engine.config.providers["emu"].http_client == "reqwest"  # type: ignore[union-attr]
