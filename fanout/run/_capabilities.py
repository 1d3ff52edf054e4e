"""What a model alias can take and do: content kinds (its provider's, narrowed by the
model's ``modalities``) and streaming; refused when the engine is built, when a run
starts (a step's declared ``media``) or before a call (a part, a stream)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fanout.config import Config, ModelConfig
from fanout.dag import LLMNode, MapNode, Plan
from fanout.errors import ConfigError
from fanout.providers import (
    BatchingProvider,
    Provider,
    StreamingProvider,
    accepted_modalities,
    part_problem,
)
from fanout.types import ChatRequest, modalities_of

if TYPE_CHECKING:
    from fanout.run._context import ModelRoute

__all__ = ["accepts", "check_media", "refused_content"]


def accepts(alias: str, model: ModelConfig, provider: Provider, kind: str) -> frozenset[str]:
    """The content kinds an alias takes; a config that asks what its provider cannot do
    (stream, or take images or audio) is refused here, when the engine is built."""
    carried = accepted_modalities(provider)
    if model.stream and not isinstance(provider, StreamingProvider):
        raise ConfigError(
            f"models.{alias}.stream = true, but provider {model.provider!r} (kind {kind!r}) "
            "cannot stream; drop stream or use a provider that can"
        )
    if model.modalities is None:
        return carried
    beyond = sorted(set(model.modalities) - carried)
    if beyond:
        raise ConfigError(
            f"models.{alias}.modalities lists {beyond}, but provider {model.provider!r} "
            f"(kind {kind!r}) carries only {sorted(carried)}; drop them from modalities"
        )
    return frozenset(model.modalities)


def check_media(plan: Plan, config: Config, providers: Mapping[str, Provider]) -> None:
    """Refuse, when a run starts, a step whose declared ``media`` (the kinds of content
    its prompt sends beyond text) a model of its chain cannot take."""
    for node in plan.nodes.values():
        body = node.body if isinstance(node, MapNode) else node
        if not isinstance(body, LLMNode) or not body.media:
            continue
        pending, seen = [body.model], set()
        while pending:
            alias = pending.pop(0)
            if alias in seen or alias not in config.models:
                continue
            seen.add(alias)
            model = config.models[alias]
            provider = providers.get(model.provider)
            if provider is None:
                continue
            if isinstance(provider, BatchingProvider):
                provider = provider.online
            kind = config.providers[model.provider].kind
            missing = sorted(set(body.media) - accepts(alias, model, provider, kind))
            if missing:
                raise ConfigError(
                    f"DAG {plan.dag_name!r}, node {node.id!r} sends {missing} parts, but model "
                    f"{alias!r} (provider {model.provider!r}, kind {kind!r}) cannot take "
                    "them; use a model that takes them, or drop them from the step's media"
                )
            pending.extend(model.fallbacks)


def refused_content(route: ModelRoute, request: ChatRequest) -> ConfigError | None:
    """Why ``route`` cannot take ``request`` (a content part of a kind it does not take,
    or a stream its provider cannot make), else ``None``."""
    kinds = modalities_of(request.messages)
    missing = sorted(kinds - route.accepts)
    if missing:
        takes = sorted(route.accepts)
        return ConfigError(
            f"model {route.alias!r} (provider {route.config.provider!r}) cannot take "
            f"content parts of kind {missing}: it takes {takes}; send those parts to a "
            "model that takes them, or set its modalities in the config"
        )
    problem = part_problem(route.provider, request) if kinds else None
    if problem:
        return ConfigError(
            f"model {route.alias!r} (provider {route.config.provider!r}) cannot take this "
            f"content part: {problem}; send it in a form the protocol takes"
        )
    if request.stream and not isinstance(route.provider, StreamingProvider):
        return ConfigError(
            f"model {route.alias!r}: provider {route.config.provider!r} cannot stream; "
            "drop stream=True from the step or use a provider that can"
        )
    return None
