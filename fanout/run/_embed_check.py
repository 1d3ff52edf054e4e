"""Refuses, when a run starts (``Engine.validate``; a batch job, before its first record),
an embed step whose model cannot embed: a protocol without an embeddings API
(Anthropic's), or a model its protocol has no embeddings body for."""

from __future__ import annotations

from collections.abc import Mapping

from fanout.config import Config
from fanout.dag import EmbedNode, MapNode, Plan
from fanout.errors import ConfigError
from fanout.providers import BatchingProvider, Provider, embed_refusal

__all__ = ["check_embeds"]

_EMBEDDING_KINDS = "openai, azure, gemini, bedrock or sim"


def check_embeds(plan: Plan, config: Config, providers: Mapping[str, Provider]) -> None:
    """Raise :class:`ConfigError` naming the step, the model and the fix for an embed
    step whose model has no embeddings API."""
    for node in plan.nodes.values():
        body = node.body if isinstance(node, MapNode) else node
        if not isinstance(body, EmbedNode) or body.model not in config.models:
            continue
        model = config.models[body.model]
        provider = providers.get(model.provider)
        if provider is None:
            continue
        if isinstance(provider, BatchingProvider):
            provider = provider.online
        why = embed_refusal(provider, model.model)
        if why is None:
            continue
        kind = config.providers[model.provider].kind
        raise ConfigError(
            f"DAG {plan.dag_name!r}, node {node.id!r} embeds with model {body.model!r} "
            f"({model.model!r} on provider {model.provider!r}, kind {kind!r}), but {why}; "
            f"use an embedding-capable model (a provider of kind {_EMBEDDING_KINDS})"
        )
