"""Engine configuration: parsed once at the edge from TOML into frozen, validated values."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fanout.errors import ConfigError

__all__ = [
    "AnthropicProviderConfig",
    "AzureProviderConfig",
    "BatchModelConfig",
    "BatchProviderConfig",
    "BedrockProviderConfig",
    "CacheConfig",
    "CircuitConfig",
    "Config",
    "FromEnv",
    "GeminiProviderConfig",
    "HedgeConfig",
    "HttpProviderConfig",
    "McpServerConfig",
    "ModelConfig",
    "OpenAIProviderConfig",
    "ProviderConfig",
    "RetryConfig",
    "SimProviderConfig",
    "TraceConfig",
    "default_config",
    "load_config",
    "parse_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Frozen):
    """Retries of one call on the same provider (exponential back-off, full jitter)."""

    max_attempts: int = Field(
        default=4, ge=1, description="attempts of one call, the first included"
    )
    max_elapsed_s: float = Field(
        default=120.0, gt=0, description="no retry once this long passed since the first attempt"
    )
    initial_backoff_s: float = Field(
        default=0.5, ge=0, description="first back-off; it doubles per retry, with full jitter"
    )
    max_backoff_s: float = Field(
        default=30.0, ge=0, description="cap on one back-off (a longer Retry-After still wins)"
    )
    retry_on: tuple[
        Literal["rate_limited", "timeout", "connection", "server", "invalid_response"], ...
    ] = Field(
        default=("rate_limited", "timeout", "connection", "server", "invalid_response"),
        description="error classes retried on the same provider",
    )


class CircuitConfig(_Frozen):
    """Open the circuit of a provider/model after consecutive failures, for a cool-down."""

    failure_threshold: int = Field(
        default=5, ge=1, description="consecutive failures that open the circuit"
    )
    cooldown_s: float = Field(
        default=30.0, gt=0, description="how long it stays open; then one probe call is let through"
    )


class _ProviderBase(_Frozen):
    requests_per_min: float | None = Field(
        default=None, gt=0, description="per model; none: learned from the provider"
    )
    tokens_per_min: float | None = Field(
        default=None, gt=0, description="per model; none: learned from the provider"
    )
    window_s: float = Field(
        default=60.0, gt=0,
        description="the longest rate-limit bucket the provider may hold, in seconds of its "
        "limit (OpenAI's hold a minute); spent at once when its headers say it is there",
    )  # fmt: skip
    max_concurrency: int = Field(
        default=256, gt=0, description="calls in flight (an HTTP provider's connection pool)"
    )
    timeout_s: float = Field(default=60.0, gt=0, description="time limit of one call")
    adaptive: bool = Field(default=True, description="learn limits from 429s and headers")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="retries of one call")
    circuit: CircuitConfig = Field(
        default_factory=CircuitConfig, description="the circuit breaker per model"
    )


class SimProviderConfig(_ProviderBase):
    """The in-process simulated provider: latency model, deterministic replies, faults."""

    kind: Literal["sim"]
    latency_ms: float = Field(default=200.0, ge=0, description="base latency per call")
    latency_per_token_ms: float = Field(default=0.0, ge=0, description="added per output token")
    jitter_sigma: float = Field(default=0.25, ge=0, description="lognormal sigma on latency")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="share of calls that fail 5xx")
    timeout_rate: float = Field(default=0.0, ge=0, le=1, description="share of calls that hang")
    invalid_json_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of structured replies that fail validation"
    )
    tail_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of attempts that take tail_latency_ms more"
    )
    tail_latency_ms: float = Field(default=0.0, ge=0, description="added to a tail attempt")
    seed: int = Field(default=0, description="seed of the replies, latencies and faults")


class BatchProviderConfig(_Frozen):
    """``[providers.NAME.batch]``: how batch jobs use this provider's Batch API."""

    discount: float = Field(
        default=0.5, gt=0, le=1,
        description="batch price as a share of the online one, for models that set none "
        "(OpenAI and Anthropic document 0.5)",
    )  # fmt: skip
    poll_initial_s: float = Field(default=5.0, gt=0, description="first wait before a poll")
    poll_max_s: float = Field(default=60.0, gt=0, description="polls back off up to this")
    flush_idle_s: float = Field(
        default=2.0, gt=0, description="submit a part-filled batch once no call joined it so long"
    )
    max_wait_s: float = Field(
        default=60.0, gt=0, description="... or once its first call has waited this long"
    )
    max_requests: int | None = Field(
        default=None, gt=0,
        description="requests per batch (default: the API's: OpenAI 50,000, Anthropic 100,000)",
    )
    max_bytes: int | None = Field(
        default=None, gt=0,
        description="bytes per batch (default: the API's: OpenAI 200 MB, Anthropic 256 MB)",
    )


class FromEnv(_Frozen):
    """A config value read from an environment variable when the provider is built:
    ``{env = "NAME"}`` (secrets: keys, tokens). It is never logged or traced."""

    env: str = Field(min_length=1, description="name of the environment variable")


class _HttpProviderBase(_ProviderBase):
    connect_timeout_s: float = Field(default=5.0, gt=0, description="time limit to connect")
    http_client: Literal["aiohttp", "reqwest"] = Field(
        default="aiohttp",
        description="the HTTP client of the calls: aiohttp, or reqwest (pyreqwest, the "
        "reqwest extra: about a third of aiohttp's client CPU a call; a call cancelled "
        "before its answer arrived runs on in the background to its answer or timeout). "
        "Unset: aiohttp, but fanout run picks reqwest when it is installed and no model "
        "on the provider hedges",
    )
    headers: dict[str, str | FromEnv] = Field(
        default_factory=dict,
        description='extra request headers; a secret one as {env = "VAR"}, read from the '
        "environment",
    )
    query: dict[str, str | FromEnv] = Field(
        default_factory=dict,
        description='extra query parameters of every call; a secret one as {env = "VAR"}',
    )

    @model_validator(mode="after")
    def _no_written_secrets(self) -> _HttpProviderBase:
        for what, values in (("headers", self.headers), ("query", self.query)):
            for key, value in values.items():
                if isinstance(value, str) and _SECRET_NAME.search(key):
                    raise ValueError(
                        f"{what}.{key} looks like a secret written into the file; put it "
                        f'in an environment variable and write {key} = {{env = "VAR"}}'
                    )
        return self


class OpenAIProviderConfig(_HttpProviderBase):
    """Any OpenAI-compatible chat-completions endpoint, by base URL."""

    kind: Literal["openai"]
    base_url: str = Field(description="the API's base URL, e.g. https://api.openai.com/v1")
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable that holds the key"
    )
    batch: BatchProviderConfig = Field(default_factory=BatchProviderConfig)


class AnthropicProviderConfig(_HttpProviderBase):
    """Anthropic's Messages API (``POST {base_url}/messages``)."""

    kind: Literal["anthropic"]
    base_url: str = Field(default="https://api.anthropic.com/v1", description="the API's base URL")
    api_key_env: str = Field(
        default="ANTHROPIC_API_KEY", description="environment variable that holds the key"
    )
    anthropic_version: str = Field(default="2023-06-01", description="the anthropic-version header")
    cache_prompt: bool = Field(
        default=False,
        description="mark the system prompt and tools cacheable (cache_control: ephemeral)",
    )
    batch: BatchProviderConfig = Field(default_factory=BatchProviderConfig)


class AzureProviderConfig(_HttpProviderBase):
    """Azure OpenAI: ``{endpoint}/openai/deployments/{model}/chat/completions?api-version=``;
    a model alias's ``model`` is the deployment's name."""

    kind: Literal["azure"]
    endpoint: str = Field(description="the resource's endpoint, https://NAME.openai.azure.com")
    api_version: str = Field(default="2024-10-21", description="the api-version query parameter")
    api_key_env: str | None = Field(
        default="AZURE_OPENAI_API_KEY",
        description="environment variable that holds the key (sent as api-key)",
    )
    token_env: str | None = Field(
        default=None,
        description="environment variable that holds a Microsoft Entra ID bearer token "
        "(instead of a key)",
    )

    @model_validator(mode="after")
    def _one_credential(self) -> AzureProviderConfig:
        if self.token_env is not None and "api_key_env" in self.model_fields_set:
            raise ValueError("set api_key_env or token_env, not both")
        return self


class BedrockProviderConfig(_HttpProviderBase):
    """AWS Bedrock's Converse API, signed with SigV4 by botocore (the ``bedrock`` extra);
    credentials come from the standard AWS chain (environment, profile, SSO, role)."""

    kind: Literal["bedrock"]
    region: str | None = Field(
        default=None, description="AWS region (default: the AWS chain's, e.g. AWS_REGION)"
    )
    profile: str | None = Field(default=None, description="an AWS profile of ~/.aws/config")
    base_url: str | None = Field(
        default=None,
        description="default https://bedrock-runtime.REGION.amazonaws.com (a VPC endpoint here)",
    )
    cache_prompt: bool = Field(
        default=False, description="put a cache point after the system prompt and tools"
    )


class GeminiProviderConfig(_HttpProviderBase):
    """Google's Gemini API (``POST {base_url}/models/{model}:generateContent``)."""

    kind: Literal["gemini"]
    base_url: str = Field(
        default="https://generativelanguage.googleapis.com/v1beta", description="the API's base URL"
    )
    api_key_env: str = Field(
        default="GEMINI_API_KEY",
        description="environment variable that holds the key (sent as x-goog-api-key)",
    )


HttpProviderConfig = (
    OpenAIProviderConfig
    | AnthropicProviderConfig
    | AzureProviderConfig
    | BedrockProviderConfig
    | GeminiProviderConfig
)
_PROVIDER_KINDS = ("sim", "openai", "anthropic", "azure", "bedrock", "gemini")
ProviderConfig = Annotated[
    SimProviderConfig | HttpProviderConfig, Field(discriminator="kind")
]


class HedgeConfig(_Frozen):
    """``[models.NAME.hedge]``: duplicate a call that has not answered by the ``quantile``
    of this alias's latency (learned online), within ``max_extra`` extra calls per call."""

    quantile: float = Field(default=0.95, gt=0, lt=1)
    max_extra: float = Field(default=0.05, ge=0, le=1, description="hedges per call, at most")
    min_samples: int = Field(default=20, ge=1, description="answered calls before hedging")
    to: Literal["same", "fallback"] = Field(
        default="same", description="send the duplicate to the same model or its first fallback"
    )


class BatchModelConfig(_Frozen):
    """``[models.NAME.batch]``: this model in batch jobs, through the provider's Batch API."""

    enabled: bool = Field(
        default=False, description="batch jobs send its calls through the Batch API "
        "(--provider-batch turns this on for every model whose provider has one)",
    )  # fmt: skip
    input_usd_per_mtok: float | None = Field(
        default=None, ge=0, description="batch price (default: the provider's discount)"
    )
    output_usd_per_mtok: float | None = Field(
        default=None, ge=0, description="batch price (default: the provider's discount)"
    )
    enqueued_tokens: int | None = Field(
        default=None, gt=0, description="the provider's limit of enqueued prompt tokens"
    )
    online_fallback: bool = Field(
        default=False, description="a call still failing after its batch retries goes online"
    )


class ModelConfig(_Frozen):
    """A model alias: which provider and model name, fallbacks, prices, and hedging."""

    provider: str = Field(description="name of a [providers.NAME] table")
    model: str = Field(description="the provider's model name, sent with each call")
    fallbacks: tuple[str, ...] = Field(
        default=(), description="aliases tried in order when this one fails"
    )
    requests_per_min: float | None = Field(default=None, gt=0, description="overrides provider")
    tokens_per_min: float | None = Field(default=None, gt=0, description="overrides provider")
    input_usd_per_mtok: float = Field(
        default=0.0, ge=0, description="USD per million prompt tokens"
    )
    output_usd_per_mtok: float = Field(
        default=0.0, ge=0, description="USD per million completion tokens"
    )
    cached_input_usd_per_mtok: float | None = Field(
        default=None, ge=0,
        description="USD per million prompt tokens read from the provider's cache "
        "(default: input_usd_per_mtok)",
    )
    cache_write_usd_per_mtok: float | None = Field(
        default=None, ge=0,
        description="USD per million prompt tokens written to the cache (Anthropic, Bedrock; "
        "default: input_usd_per_mtok)",
    )
    hedge: HedgeConfig | None = Field(default=None, description="hedging of slow calls (opt-in)")
    batch: BatchModelConfig = Field(default_factory=BatchModelConfig)
    stream: bool = Field(
        default=False, description="stream every llm call of this alias (server-sent events)"
    )
    modalities: tuple[Literal["text", "image", "audio"], ...] | None = Field(
        default=None,
        description="content kinds the model takes, e.g. [\"text\"] for a text-only model "
        "(unset: whatever its provider's protocol carries)",
    )
    embed_max_inputs: int = Field(
        default=2048, ge=1, description="embeddings: inputs packed into one request, at most"
    )
    embed_max_tokens: int = Field(
        default=300_000, ge=1, description="embeddings: estimated tokens of one request, at most"
    )
    embed_linger_ms: float = Field(
        default=10.0, ge=0, description="embeddings: how long texts gather before a request"
    )
    dimensions: int | None = Field(
        default=None, ge=1, description="embeddings: the vectors' size, sent with each call"
    )

    def cost_usd(
        self,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        """The price of a call; ``input_tokens`` includes the cached and cache-written ones."""
        price_in = self.input_usd_per_mtok
        cached = self.cached_input_usd_per_mtok
        write = self.cache_write_usd_per_mtok
        fresh = input_tokens - cached_input_tokens - cache_write_tokens
        return (
            fresh * price_in
            + cached_input_tokens * (price_in if cached is None else cached)
            + cache_write_tokens * (price_in if write is None else write)
            + output_tokens * self.output_usd_per_mtok
        ) / 1_000_000

    def batch_priced(self, discount: float) -> ModelConfig:
        """This model at its batch prices (set, else ``discount`` times the online ones)."""
        batch = self.batch
        return self.model_copy(
            update={
                "input_usd_per_mtok": batch.input_usd_per_mtok
                if batch.input_usd_per_mtok is not None
                else self.input_usd_per_mtok * discount,
                "output_usd_per_mtok": batch.output_usd_per_mtok
                if batch.output_usd_per_mtok is not None
                else self.output_usd_per_mtok * discount,
                "cached_input_usd_per_mtok": None
                if self.cached_input_usd_per_mtok is None
                else self.cached_input_usd_per_mtok * discount,
                "cache_write_usd_per_mtok": None
                if self.cache_write_usd_per_mtok is None
                else self.cache_write_usd_per_mtok * discount,
            }
        )


class TraceConfig(_Frozen):
    """``[traces]``: what the trace keeps of prompts and replies, and how it is written."""

    content: Literal["hmac", "full", "none"] = Field(
        default="hmac",
        description="hmac: keyed digests and sizes of inputs/outputs; full: the texts; none",
    )
    hmac_key_env: str = Field(
        default="FANOUT_TRACE_KEY", description="environment variable holding the HMAC key"
    )
    flush_interval_s: float = Field(default=1.0, gt=0, description="at most this much is lost")
    row_group_rows: int = Field(default=100_000, ge=1_000, description="rows per Parquet part")
    roll_interval_s: float = Field(default=300.0, gt=0, description="max age of an open part")
    # Live export (the otel extra): the same rows as OpenTelemetry spans, sent over OTLP
    # while the job runs. The standard OTEL_* environment configures it too; a value set
    # here wins over the environment's.
    otlp: bool | None = Field(
        default=None,
        description="live OTLP export; unset: on when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT "
        "is set (or otlp_endpoint is)",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="the collector's base URL (as OTEL_EXPORTER_OTLP_ENDPOINT: "
        "http/protobuf posts to ENDPOINT/v1/traces)",
    )
    otlp_protocol: Literal["http/protobuf", "grpc"] | None = Field(
        default=None, description="as OTEL_EXPORTER_OTLP_PROTOCOL (default http/protobuf)"
    )
    otlp_headers: dict[str, str] = Field(
        default_factory=dict,
        description="headers of each export request; give secrets as ${VAR} (read from "
        "the environment), never in the file",
    )
    service_name: str | None = Field(
        default=None, description="the resource's service.name (as OTEL_SERVICE_NAME)"
    )
    project: str | None = Field(
        default=None,
        description="openinference.project.name: the Arize Phoenix project the spans go to",
    )
    propagate: bool = Field(
        default=False,
        description="send a W3C traceparent header with each provider call (off: vendors "
        "gain nothing from it)",
    )


class McpServerConfig(_Frozen):
    """``[mcp.NAME]``: an MCP server whose tools llm nodes call (``tools=[mcp("NAME")]``).

    A stdio server is started as ``command`` with ``args`` (and ``env`` added to this
    process's environment); a streamable HTTP server is reached at ``url`` with
    ``headers``. A value may name environment variables as ``${VAR}``, read when the
    server is reached: secrets (tokens, keys) must be given that way, never in the file.
    """

    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int = Field(default=8, gt=0, description="calls in flight per process")
    requests_per_min: float | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=30.0, gt=0, description="one tool call")
    connect_timeout_s: float = Field(default=15.0, gt=0, description="start, handshake, listing")
    retry: RetryConfig = Field(
        default_factory=lambda: RetryConfig(max_attempts=3, max_elapsed_s=60.0),
        description="lost connections and timeouts; a tool's own error is never retried",
    )
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    stateful: bool = Field(
        default=False, description="a session per run (else one per process, shared)"
    )

    @model_validator(mode="after")
    def _check(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("set either command (a stdio server) or url (streamable HTTP)")
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError("args, env and cwd are for stdio servers (command); drop them")
        if self.command is not None and self.headers:
            raise ValueError("headers are for HTTP servers (url); use env for a stdio server")
        for what, values in (("headers", self.headers), ("env", self.env)):
            for key, value in values.items():
                if _SECRET_NAME.search(key) and "${" not in value:
                    raise ValueError(
                        f"{what}.{key} looks like a secret written into the file; put it in "
                        f'an environment variable and write {key} = "${{VAR}}" instead'
                    )
        return self


_SECRET_NAME = re.compile(r"(?i)auth|token|secret|password|passwd|api[-_]?key|credential")

class CacheConfig(_Frozen):
    """``[cache]``: replies kept across jobs and services, by call key (see ``--cache``)."""

    dir: str = Field(description="the cache directory; any jobs and services may share it")
    max_bytes: int = Field(default=10 * 1024**3, gt=0, description="evicts the least recently used")
    sampled: bool = Field(
        default=False, description="cache calls with temperature > 0 too (their replies vary)"
    )


class Config(_Frozen):
    """The whole configuration: providers by name and model aliases by name."""

    providers: dict[str, ProviderConfig] = Field(
        default_factory=dict, description="where calls go, by name"
    )
    models: dict[str, ModelConfig] = Field(
        default_factory=dict, description="model aliases (what pipelines name), by name"
    )
    escalation_path: str | None = Field(
        default=None, description="JSONL file for steps whose every option failed"
    )
    traces: TraceConfig = Field(
        default_factory=TraceConfig, description="what traces keep and how they are written"
    )
    data_dir: str | None = Field(
        default=None, description="where durable state lives (sessions.db); none: no sessions"
    )
    mcp: dict[str, McpServerConfig] = Field(
        default_factory=dict, description="MCP servers by name, for tools=[mcp(NAME)]"
    )
    cache: CacheConfig | None = None

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        for alias, model in self.models.items():
            if model.provider not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none"
                raise ValueError(
                    f"models.{alias}.provider = {model.provider!r} is not a configured "
                    f"provider (configured: {known}); add [providers.{model.provider}] "
                    "or fix the name"
                )
            for fallback in model.fallbacks:
                if fallback not in self.models:
                    raise ValueError(
                        f"models.{alias}.fallbacks names {fallback!r}, which is not a "
                        f"model alias; add [models.{fallback}] or remove it"
                    )
                if fallback == alias:
                    raise ValueError(f"models.{alias}.fallbacks lists the model itself")
        return self


def default_config() -> Config:
    """The embedded default: aliases ``fast`` and ``smart`` on the simulated provider."""
    return parse_config(
        {
            "providers": {"sim": {"kind": "sim", "latency_ms": 200}},
            "models": {
                "fast": {
                    "provider": "sim",
                    "model": "sim-small",
                    "fallbacks": ["smart"],
                    "input_usd_per_mtok": 0.15,
                    "output_usd_per_mtok": 0.60,
                },
                "smart": {
                    "provider": "sim",
                    "model": "sim-large",
                    "input_usd_per_mtok": 2.50,
                    "output_usd_per_mtok": 10.00,
                },
            },
        }
    )


def parse_config(data: dict[str, object], *, source: str = "config") -> Config:
    """Validate a config mapping; errors name the key and the fix."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(file)!r} does not exist; check the path") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(file)!r} cannot be read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return parse_config(data, source=str(file))


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        parts = list(err["loc"])
        # A discriminated union puts the tag into the location: providers.x.sim.key.
        if len(parts) > 2 and parts[0] == "providers" and parts[2] in _PROVIDER_KINDS:
            del parts[2]
        loc = ".".join(str(p) for p in parts)
        kind = err["type"]
        if kind == "extra_forbidden":
            lines.append(f"  {loc}: unknown key; remove it or check its spelling")
        elif kind == "missing":
            lines.append(f"  {loc}: required key is missing; add it")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            kinds = ", ".join(repr(k) for k in _PROVIDER_KINDS)
            lines.append(f"  {loc}.kind: must be one of {kinds}")
        else:
            got = err.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            lines.append(f"  {loc or '(top level)'}: {err['msg']}{shown}")
    return "\n".join(lines)
