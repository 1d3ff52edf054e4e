"""Turning a batch job's engine to batch mode: which models batch, and their Batch API clients.

``--provider-batch`` turns batch mode on for every model whose provider has a Batch
API (kind ``openai``: ``/v1/batches``; kind ``anthropic``: Message Batches);
``[models.NAME.batch] enabled = true`` does it per model. Each
such provider is wrapped in a :class:`BatchClient` journaling into
``OUTPUT/batches/PROVIDER``; the engine then routes those models' calls through it
(:class:`fanout.run.Engine.use_providers`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from fanout.batch._batch_lines import BatchStats
from fanout.batch._batch_log import BATCHES_DIR, BatchLog
from fanout.batch._batching import BatchClient
from fanout.config import (
    AnthropicProviderConfig,
    Config,
    OpenAIProviderConfig,
    ProviderConfig,
)
from fanout.errors import ConfigError
from fanout.providers import AnthropicBatchAPI, BatchAPI, OpenAIBatchAPI, Provider
from fanout.run import Engine

__all__ = ["BatchMode", "batch_config", "default_api", "has_batch_api", "use_batch_mode"]

_log = logging.getLogger(__name__)

BatchCapable = OpenAIProviderConfig | AnthropicProviderConfig
ApiFactory = Callable[[str, BatchCapable], BatchAPI]
_NO_BATCH_API = (
    "kinds 'openai' and 'anthropic' have one; the emulator, `fanout sim-server`, serves both"
)


def has_batch_api(provider: ProviderConfig) -> bool:
    """Whether fanout can send this provider's calls through a Batch API."""
    return isinstance(provider, OpenAIProviderConfig | AnthropicProviderConfig)


def batch_config(config: Config, *, all_models: bool, online_fallback: bool) -> Config:
    """``config`` with batch mode on for every model that can (``all_models``, the flag)
    or that asks (``[models.NAME.batch] enabled``); raises :class:`ConfigError` for a
    model that asks on a provider without a Batch API, or a flag no model can honour."""
    models = {}
    for alias, model in config.models.items():
        provider = config.providers[model.provider]
        capable = has_batch_api(provider)
        if model.batch.enabled and not capable:
            raise ConfigError(
                f"models.{alias}.batch.enabled: provider {model.provider!r} (kind "
                f"{provider.kind!r}) has no Batch API fanout can use ({_NO_BATCH_API}); "
                "drop the setting or route the model to such a provider"
            )
        wanted = model.batch.enabled or (all_models and capable)
        batch = model.batch.model_copy(
            update={
                "enabled": wanted,
                "online_fallback": model.batch.online_fallback or (wanted and online_fallback),
            }
        )
        models[alias] = model.model_copy(update={"batch": batch})
    if all_models and not any(m.batch.enabled for m in models.values()):
        raise ConfigError(
            f"--provider-batch: no model's provider has a Batch API ({_NO_BATCH_API}; the "
            "embedded default is the in-process simulator); pass a --config with one, e.g. "
            "pointing at `fanout sim-server`"
        )
    return config.model_copy(update={"models": models})


class BatchMode:
    """The Batch API clients of one job, for its progress line and ``--detach``."""

    def __init__(self, clients: list[BatchClient]) -> None:
        self.clients = clients

    def stats(self) -> BatchStats:
        batches: dict[str, int] = {}
        answered = submitted = buffered = 0
        for client in self.clients:
            s = client.stats()
            for state, count in s.batches.items():
                batches[state] = batches.get(state, 0) + count
            answered += s.lines_answered
            submitted += s.lines_submitted
            buffered += s.buffered
        return BatchStats(batches, answered, submitted, buffered)

    async def settled(self) -> None:
        """Return once every client has submitted all it can and only waits for batches."""
        while True:
            await asyncio.gather(*(c.settled.wait() for c in self.clients))
            if all(c.settled.is_set() for c in self.clients):
                return


def use_batch_mode(
    engine: Engine,
    output: Path,
    *,
    all_models: bool,
    online_fallback: bool,
    api_factory: ApiFactory | None = None,
) -> BatchMode | None:
    """Put ``engine`` in batch mode for this job (``None``: no model batches).

    ``api_factory`` builds each provider's :class:`BatchAPI` (default: by its kind,
    OpenAI's or Anthropic's, from the provider's ``base_url`` and key).
    """
    config = batch_config(engine.config, all_models=all_models, online_fallback=online_fallback)
    names = sorted({m.provider for m in config.models.values() if m.batch.enabled})
    if not names:
        return None
    factory = api_factory or default_api
    wrapped: dict[str, Provider] = {}
    clients = []
    for name in names:
        pcfg = config.providers[name]
        assert isinstance(pcfg, BatchCapable)  # batch_config checked it
        limits = {
            m.model: m.batch.enqueued_tokens
            for m in config.models.values()
            if m.provider == name and m.batch.enabled and m.batch.enqueued_tokens is not None
        }
        client = BatchClient(
            engine.providers[name],
            factory(name, pcfg),
            BatchLog(output / BATCHES_DIR / name, writer_id=f"{engine.job_id}-{os.getpid()}"),
            clock=engine.clock,
            settings=pcfg.batch,
            enqueued_tokens=limits,
        )
        wrapped[name] = client
        clients.append(client)
    engine.use_providers(wrapped, config=config)
    batched = sorted(a for a, m in config.models.items() if m.batch.enabled)
    _log.info("batch mode: %s through the Batch API of %s", ", ".join(batched), ", ".join(names))
    return BatchMode(clients)


def default_api(name: str, cfg: BatchCapable) -> BatchAPI:
    """The Batch API client of a provider, by its kind."""
    if isinstance(cfg, AnthropicProviderConfig):
        return AnthropicBatchAPI.from_config(name, cfg)
    return OpenAIBatchAPI.from_env(name, base_url=cfg.base_url, api_key_env=cfg.api_key_env)
