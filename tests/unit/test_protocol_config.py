"""Provider configs of every kind, secrets from the environment, cached-token pricing,
Anthropic's RFC 3339 resets, and usage with cache counts through pickling and the journal."""

from __future__ import annotations

import pickle

import pytest

from fanout import ConfigError, parse_config
from fanout.config import ModelConfig
from fanout.limits import RateLimitHeaders
from fanout.providers import (
    AnthropicProvider,
    AzureOpenAIProvider,
    BedrockProvider,
    GeminiProvider,
    OpenAIProvider,
    build_http_provider,
)
from fanout.run._journal import response_entry, response_from
from fanout.types import ChatResponse, Usage


def providers(**table: object) -> dict[str, object]:
    return {"providers": {"p": table}, "models": {"m": {"provider": "p", "model": "x"}}}


def test_every_kind_parses_with_its_defaults() -> None:
    cfg = parse_config(
        {
            "providers": {
                "a": {"kind": "anthropic"},
                "z": {"kind": "azure", "endpoint": "https://r.openai.azure.com"},
                "b": {"kind": "bedrock", "region": "us-west-2"},
                "g": {"kind": "gemini"},
            }
        }
    )
    a, z, b, g = (cfg.providers[k] for k in "azbg")
    assert (a.kind, a.api_key_env, a.anthropic_version) == (  # type: ignore[union-attr]
        "anthropic", "ANTHROPIC_API_KEY", "2023-06-01",
    )  # fmt: skip
    assert (z.api_version, z.api_key_env) == ("2024-10-21", "AZURE_OPENAI_API_KEY")  # type: ignore[union-attr]
    assert b.region == "us-west-2"  # type: ignore[union-attr]
    assert g.base_url.endswith("/v1beta")  # type: ignore[union-attr]


def test_an_unknown_kind_lists_every_kind() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(providers(kind="vertex"))
    for kind in ("'openai'", "'anthropic'", "'azure'", "'bedrock'", "'gemini'", "'sim'"):
        assert kind in str(caught.value)


def test_a_secret_written_into_headers_is_refused_with_the_fix() -> None:
    secret = r'headers\.x-api-key looks like a secret.*\{env = "VAR"\}'
    with pytest.raises(ConfigError, match=secret):
        parse_config(providers(kind="openai", base_url="http://x", headers={"x-api-key": "k"}))
    with pytest.raises(ConfigError, match=r"query\.token looks like a secret"):
        parse_config(providers(kind="gemini", query={"token": "t"}))
    with pytest.raises(ConfigError, match="api_key_env or token_env, not both"):
        parse_config(providers(kind="azure", endpoint="http://x", api_key_env="A", token_env="B"))


def test_env_values_are_read_when_built_and_an_unset_one_is_named() -> None:
    cfg = parse_config(
        providers(
            kind="openai",
            base_url="http://127.0.0.1:9/v1",
            headers={"x-org": "team-a", "x-gateway-key": {"env": "GW_KEY"}},
            query={"key": {"env": "GW_QUERY"}},
        )
    )
    table = cfg.providers["p"]
    with pytest.raises(ConfigError, match=r"providers.p.headers.x-gateway-key.env = 'GW_KEY'"):
        build_http_provider("p", table, environ={})  # type: ignore[arg-type]
    env = {"GW_KEY": "gw-SECRET-1", "GW_QUERY": "q-SECRET-2"}
    built = build_http_provider("p", table, environ=env)  # type: ignore[arg-type]
    assert isinstance(built, OpenAIProvider)
    assert "SECRET" not in repr(built)
    assert built._scrub("gw-SECRET-1 and q-SECRET-2") == "*** and ***"


def test_each_kind_builds_its_client() -> None:
    env = {"K": "key-0123456789", "AWS_ACCESS_KEY_ID": "AKIA0000000000000000"}
    tables = {
        "anthropic": ({"api_key_env": "K"}, AnthropicProvider),
        "azure": ({"endpoint": "http://127.0.0.1:9", "api_key_env": "K"}, AzureOpenAIProvider),
        "gemini": ({"api_key_env": "K"}, GeminiProvider),
    }
    for kind, (extra, cls) in tables.items():
        cfg = parse_config(providers(kind=kind, **extra))
        assert isinstance(build_http_provider("p", cfg.providers["p"], environ=env), cls)  # type: ignore[arg-type]
    missing = parse_config(providers(kind="anthropic"))
    with pytest.raises(ConfigError, match="'ANTHROPIC_API_KEY', but that environment variable"):
        build_http_provider("p", missing.providers["p"], environ={})  # type: ignore[arg-type]


def test_bedrock_without_region_or_credentials_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    for name in (
        "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", f"{tmp_path}/none")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", f"{tmp_path}/none")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match="no AWS region"):
        BedrockProvider("b")
    with pytest.raises(ConfigError, match="no AWS credentials found; export AWS_ACCESS_KEY_ID"):
        BedrockProvider("b", region="us-east-1")


def test_cached_and_written_tokens_have_their_own_prices() -> None:
    model = ModelConfig(
        provider="p",
        model="m",
        input_usd_per_mtok=3.0,
        output_usd_per_mtok=15.0,
        cached_input_usd_per_mtok=0.3,
        cache_write_usd_per_mtok=3.75,
    )
    # 10,000 prompt tokens: 6,000 read from the cache, 1,000 written, 3,000 fresh
    assert model.cost_usd(10_000, 100, 6_000, 1_000) == pytest.approx(
        (3_000 * 3.0 + 6_000 * 0.3 + 1_000 * 3.75 + 100 * 15.0) / 1e6
    )
    plain = ModelConfig(provider="p", model="m", input_usd_per_mtok=3.0)
    assert plain.cost_usd(10_000, 0, 6_000, 1_000) == plain.cost_usd(10_000, 0)  # unpriced: input
    batch = model.batch_priced(0.5)
    assert (batch.cached_input_usd_per_mtok, batch.cache_write_usd_per_mtok) == (0.15, 1.875)


def test_usage_with_cache_counts_survives_pickling_and_the_journal() -> None:
    usage = Usage(100, 5, 60, 10)
    assert pickle.loads(pickle.dumps(usage)) == usage
    assert Usage(1, 2) + usage == Usage(101, 7, 60, 10)
    assert pickle.loads(pickle.dumps(Usage(3, 4))) == Usage(3, 4)
    reply = ChatResponse(content="x", usage=usage)
    assert response_from(response_entry(reply)).usage == usage
    assert response_entry(ChatResponse(content="x", usage=Usage(3, 4)))["usage"] == [3, 4]


def test_anthropic_resets_are_rfc3339_times_from_the_date_header() -> None:
    parsed = RateLimitHeaders.parse(
        {
            "date": "Thu, 21 Aug 2025 12:40:30 GMT",
            "anthropic-ratelimit-requests-limit": "1000",
            "anthropic-ratelimit-requests-remaining": "999",
            "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:31Z",
            "anthropic-ratelimit-tokens-limit": "96000",
            "anthropic-ratelimit-tokens-remaining": "90000",
            "anthropic-ratelimit-tokens-reset": "2025-08-21T12:41:00Z",
        }
    )
    assert (parsed.limit_requests, parsed.remaining_requests) == (1000, 999)
    assert (parsed.limit_tokens, parsed.remaining_tokens) == (96000, 90000)
    assert (parsed.reset_requests_s, parsed.reset_tokens_s) == (1.0, 30.0)
    no_date = RateLimitHeaders.parse({"anthropic-ratelimit-requests-reset": "2025-08-21T12:40:31Z"})
    assert no_date.reset_requests_s is None
