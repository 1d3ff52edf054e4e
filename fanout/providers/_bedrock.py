"""``BedrockProvider``: AWS Bedrock's Converse API (``POST /model/{modelId}/converse``).

Each call is signed with SigV4 by botocore's own signer (the ``bedrock`` extra), with
credentials from the standard AWS chain (environment, shared config and profile, SSO,
container or instance role), refreshed by botocore when they expire; none of them is
ever in a log, an error, a repr or a trace. Converse's shape: ``system`` and
``messages`` of content blocks (``text``, ``toolUse``, ``toolResult``),
``inferenceConfig``, ``toolConfig`` with ``toolSpec``s and a ``toolChoice``;
``usage.inputTokens`` excludes the cache's tokens (``cacheReadInputTokens``,
``cacheWriteInputTokens``), which fanout adds to its input count. Errors are named by
the ``x-amzn-ErrorType`` header: ``ThrottlingException`` and
``ServiceQuotaExceededException`` are :class:`~fanout.errors.RateLimited`,
``ModelNotReadyException`` (a 429 that is no rate limit) is retried as a 503.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from fanout._extras import require
from fanout.errors import ConfigError, ProviderError, ProviderHTTPError, RateLimited
from fanout.providers._bedrock_embed import TOKEN_COUNT_HEADER, BedrockEmbeddings
from fanout.providers._bedrock_parts import BedrockParts, bedrock_block
from fanout.providers._bedrock_stream import BedrockStream
from fanout.providers._errors import KEPT_HEADERS, error_detail, error_for
from fanout.providers._jsonstream import stream_call
from fanout.providers._turns import answered, output_tool, system_text, turns
from fanout.types import ChatRequest, ChatResponse, ToolCall, Usage

if TYPE_CHECKING:
    import httpx

    from fanout.providers._http import HttpClient, HttpTransport

__all__ = ["BedrockProvider"]

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_THROTTLED = frozenset({"ThrottlingException", "ServiceQuotaExceededException"})
_SIGNED = ("authorization", "x-amz-date", "x-amz-security-token")
_EVENT_STREAM = "application/vnd.amazon.eventstream"
_CACHE_POINT: dict[str, object] = {"cachePoint": {"type": "default"}}


class BedrockProvider(BedrockParts, BedrockEmbeddings):
    """Bedrock Converse in ``region`` (or at ``base_url``, a VPC endpoint).

    ``credentials``: a botocore credentials object (default: the AWS chain's, for
    ``profile``); ``cache_prompt``: a cache point after the system prompt and the tools.
    """

    protocol = "bedrock"
    keep = (*KEPT_HEADERS, "x-amzn-errortype", TOKEN_COUNT_HEADER)

    def __init__(
        self,
        name: str,
        *,
        region: str | None = None,
        profile: str | None = None,
        base_url: str | None = None,
        credentials: Any = None,
        cache_prompt: bool = False,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
        max_connections: int = 256,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | HttpTransport | HttpClient | None = None,
    ) -> None:
        require('AWS Bedrock (kind = "bedrock")', "botocore", extra="bedrock")
        import botocore.session

        session = botocore.session.Session(profile=profile)
        region = region or session.get_config_variable("region")
        if not region:
            raise ConfigError(
                f'providers.{name}: no AWS region; set region = "us-east-1" (say) in the '
                "config, or AWS_REGION in the environment"
            )
        self.region = region
        self._credentials = credentials
        if credentials is None:
            import botocore.exceptions

            try:
                self._credentials = session.get_credentials()
            except (botocore.exceptions.BotoCoreError, ValueError, OSError) as exc:
                raise ConfigError(
                    f"providers.{name}: the AWS credential chain failed "
                    f"({type(exc).__name__}); check the AWS_* variables and ~/.aws/config"
                ) from None
        if self._credentials is None:
            raise ConfigError(
                f"providers.{name}: no AWS credentials found; export AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, set AWS_PROFILE, or run where a role provides them"
            )
        super().__init__(
            name, base_url=base_url or f"https://bedrock-runtime.{region}.amazonaws.com",
            headers=headers, query=query, secrets=secrets, max_connections=max_connections,
            timeout_s=timeout_s, connect_timeout_s=connect_timeout_s, transport=transport,
        )  # fmt: skip
        self.cache_prompt = cache_prompt

    def _request(self, request: ChatRequest) -> tuple[str, bytes, dict[str, str] | None]:
        path = self._path(f"/model/{urllib.parse.quote(request.model, safe='')}/converse")
        body = orjson.dumps(self.body(request))
        return path, body, self._signed(path, body)

    def _signed(self, path: str, body: bytes) -> dict[str, str]:
        """SigV4 headers of this call (botocore signs; fresh credentials each time)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        signing = AWSRequest(
            method="POST",
            url=self.base_url + path,
            data=body,
            headers={"content-type": "application/json"},
        )
        SigV4Auth(self._credentials.get_frozen_credentials(), "bedrock", self.region).add_auth(
            signing
        )
        return {k: v for k, v in signing.headers.items() if k.lower() in _SIGNED}

    def body(self, request: ChatRequest) -> dict[str, object]:
        """The Converse body of ``request``."""
        body: dict[str, object] = {
            "messages": [
                {"role": t.role, "content": t.blocks}
                for t in turns(
                    request.messages, text=_text, call=_call, result=_result, part=bedrock_block
                )
            ],
            "inferenceConfig": {
                "maxTokens": request.max_tokens,
                "temperature": request.temperature,
            },
        }
        system = system_text(request.messages)
        if system:
            body["system"] = [{"text": system}, *((_CACHE_POINT,) if self.cache_prompt else ())]
        out = output_tool(request)
        specs = [*request.tools, *((out,) if out is not None else ())]
        if specs:
            tools: list[dict[str, object]] = [
                {"toolSpec": {"name": t.name, "description": t.description,
                              "inputSchema": {"json": t.parameters}}}
                for t in specs
            ]  # fmt: skip
            if self.cache_prompt:
                tools.append(_CACHE_POINT)
            config: dict[str, object] = {"tools": tools}
            if out is not None:
                config["toolChoice"] = (
                    {"any": {}} if request.tools else {"tool": {"name": out.name}}
                )
            body["toolConfig"] = config
        return body

    def _reply(self, data: object, headers: dict[str, str]) -> ChatResponse:
        assert isinstance(data, dict)
        usage = data["usage"]
        read = int(usage.get("cacheReadInputTokens") or 0)
        written = int(usage.get("cacheWriteInputTokens") or 0)
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in data["output"]["message"]["content"]:
            if "text" in block:
                texts.append(str(block["text"]))
            elif "toolUse" in block:
                use = block["toolUse"]
                arguments = orjson.dumps(use.get("input") or {}).decode()
                calls.append(ToolCall(str(use["toolUseId"]), str(use["name"]), arguments))
        return ChatResponse(
            content="".join(texts) if texts else None,
            usage=Usage(
                int(usage["inputTokens"]) + read + written,
                int(usage.get("outputTokens") or 0),
                read,
                written,
            ),
            finish_reason=_FINISH.get(str(data.get("stopReason")), "stop"),
            tool_calls=tuple(calls),
            headers=headers,
        )

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse:
        response = await super().complete(request, timeout_s=timeout_s)
        out = output_tool(request)
        return response if out is None else answered(response, out.name)

    async def stream(
        self,
        request: ChatRequest,
        *,
        on_delta: Callable[[str], None],
        timeout_s: float | None = None,
    ) -> ChatResponse:
        """The reply as ConverseStream's event-stream frames (``/converse-stream``;
        :mod:`fanout.providers._bedrock_stream`)."""
        model = urllib.parse.quote(request.model, safe="")
        path = self._path(f"/model/{model}/converse-stream")
        body = orjson.dumps(self.body(request))
        headers = {**self._signed(path, body), "accept": _EVENT_STREAM}
        decoder = BedrockStream(on_delta, finish=_FINISH, error=self._error)
        response = await stream_call(self, request, path, body, headers, decoder, timeout_s)
        out = output_tool(request)
        return response if out is None else answered(response, out.name)

    def _error(self, status: int, raw: bytes, headers: dict[str, str]) -> ProviderError:
        kind = headers.get("x-amzn-errortype", "").split(":", 1)[0]
        if not kind:
            try:
                kind = str(orjson.loads(raw).get("__type", "")).rsplit("#", 1)[-1]
            except (ValueError, AttributeError):
                kind = ""
        detail, _ = error_detail(raw)
        text = self._scrub(f"{self.name}: HTTP {status} {kind}: {detail}")
        if kind in _THROTTLED:
            return RateLimited(text, provider=self.name, headers=headers)
        if kind == "ModelNotReadyException":
            return ProviderHTTPError(text, provider=self.name, status_code=503, headers=headers)
        return error_for(self.name, status, raw, headers, scrub=self._scrub)

    def _scrub(self, text: str) -> str:
        frozen = self._credentials.get_frozen_credentials()
        for secret in (frozen.secret_key, frozen.token, frozen.access_key):
            if secret:
                text = text.replace(secret, "***")
        return super()._scrub(text)


def _text(content: str) -> dict[str, object]:
    return {"text": content}


def _call(call_id: str, name: str, arguments: dict[str, object]) -> dict[str, object]:
    return {"toolUse": {"toolUseId": call_id, "name": name, "input": arguments}}


def _result(call_id: str, name: str, content: str) -> dict[str, object]:
    return {"toolResult": {"toolUseId": call_id, "content": [{"text": content}]}}
