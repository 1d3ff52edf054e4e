"""A provider from its config: secrets read from the environment here, and only here."""

from __future__ import annotations

import os
from collections.abc import Mapping

from fanout.config import (
    AnthropicProviderConfig,
    AzureProviderConfig,
    BedrockProviderConfig,
    FromEnv,
    GeminiProviderConfig,
    HttpProviderConfig,
    OpenAIProviderConfig,
)
from fanout.errors import ConfigError
from fanout.providers._anthropic import AnthropicProvider
from fanout.providers._azure import AzureOpenAIProvider
from fanout.providers._base import Provider
from fanout.providers._gemini import GeminiProvider
from fanout.providers._openai import OpenAIProvider

__all__ = ["build_http_provider", "env_secret", "secret_values"]


def build_http_provider(
    name: str, cfg: HttpProviderConfig, *, environ: Mapping[str, str] | None = None
) -> Provider:
    """The provider ``cfg`` describes; a secret whose variable is unset is a
    :class:`ConfigError` naming the variable (never its value)."""
    env = os.environ if environ is None else environ
    secrets: list[str] = []
    headers = secret_values(name, "headers", cfg.headers, env, secrets)
    query = secret_values(name, "query", cfg.query, env, secrets)
    common: dict[str, object] = {
        "headers": headers,
        "query": query,
        "secrets": tuple(secrets),
        "max_connections": cfg.max_concurrency,
        "timeout_s": cfg.timeout_s,
        "connect_timeout_s": cfg.connect_timeout_s,
        "transport": cfg.http_client,
    }
    if isinstance(cfg, OpenAIProviderConfig):
        key = env_secret(name, "api_key_env", cfg.api_key_env, env) if cfg.api_key_env else None
        return OpenAIProvider(name, base_url=cfg.base_url, api_key=key, **common)  # type: ignore[arg-type]
    if isinstance(cfg, AnthropicProviderConfig):
        return AnthropicProvider(
            name, api_key=env_secret(name, "api_key_env", cfg.api_key_env, env),
            base_url=cfg.base_url, anthropic_version=cfg.anthropic_version,
            cache_prompt=cfg.cache_prompt, **common,  # type: ignore[arg-type]
        )  # fmt: skip
    if isinstance(cfg, AzureProviderConfig):
        token = env_secret(name, "token_env", cfg.token_env, env) if cfg.token_env else None
        key = None
        if token is None and cfg.api_key_env:
            key = env_secret(name, "api_key_env", cfg.api_key_env, env)
        return AzureOpenAIProvider(
            name, endpoint=cfg.endpoint, api_version=cfg.api_version, api_key=key,
            token=token, **common,  # type: ignore[arg-type]
        )  # fmt: skip
    if isinstance(cfg, GeminiProviderConfig):
        return GeminiProvider(
            name, api_key=env_secret(name, "api_key_env", cfg.api_key_env, env),
            base_url=cfg.base_url, **common,  # type: ignore[arg-type]
        )  # fmt: skip
    assert isinstance(cfg, BedrockProviderConfig)
    from fanout.providers._bedrock import BedrockProvider  # botocore: the bedrock extra

    return BedrockProvider(
        name, region=cfg.region, profile=cfg.profile, base_url=cfg.base_url,
        cache_prompt=cfg.cache_prompt, **common,  # type: ignore[arg-type]
    )  # fmt: skip


def env_secret(provider: str, key: str, variable: str, env: Mapping[str, str]) -> str:
    """The value of ``variable``; a :class:`ConfigError` naming it when it is unset."""
    value = env.get(variable)
    if not value:
        raise ConfigError(
            f"providers.{provider}.{key} = {variable!r}, but that environment variable is "
            "not set; export it (secrets never go in the config file)"
        )
    return value


def secret_values(
    provider: str,
    what: str,
    values: Mapping[str, str | FromEnv],
    env: Mapping[str, str],
    secrets: list[str],
) -> dict[str, str]:
    """``headers``/``query`` with each ``{env = "VAR"}`` read (and noted as a secret)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, FromEnv):
            out[key] = env_secret(provider, f"{what}.{key}.env", value.env, env)
            secrets.append(out[key])
        else:
            out[key] = value
    return out
