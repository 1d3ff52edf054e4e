"""``AzureOpenAIProvider``: Azure OpenAI's chat completions, by deployment.

``POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...``
with the key in ``api-key`` (or a Microsoft Entra ID token as ``Authorization:
Bearer``); the body and the reply are OpenAI's (a model alias's ``model`` names the
deployment). Azure's content filter answers a 400 with code ``content_filter`` for a
prompt, and a 200 whose finish reason is ``content_filter`` for a reply it cut: both are
:class:`~fanout.errors.ContentFiltered` (when the reply has nothing left). Its 429s
carry ``retry-after``/``retry-after-ms`` and its responses ``x-ratelimit-remaining-*``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import orjson

from fanout.errors import ContentFiltered
from fanout.providers._azure_embed import AzureEmbeddings
from fanout.providers._azure_stream import AzureStream
from fanout.providers._jsonstream import stream_call
from fanout.providers._openai import _request_body, completion_usage
from fanout.types import MODALITIES, ChatRequest, ChatResponse, ToolCall

if TYPE_CHECKING:
    import httpx

    from fanout.providers._http import HttpClient, HttpTransport

__all__ = ["AzureOpenAIProvider"]


class AzureOpenAIProvider(AzureEmbeddings):
    """Azure OpenAI at ``endpoint`` (``https://NAME.openai.azure.com``)."""

    accepts = frozenset(MODALITIES)  # the OpenAI body, content parts as they are

    protocol = "azure"

    def __init__(
        self,
        name: str,
        *,
        endpoint: str,
        api_version: str = "2024-10-21",
        api_key: str | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
        max_connections: int = 256,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | HttpTransport | HttpClient | None = None,
    ) -> None:
        auth = {"api-key": api_key} if api_key else {}
        if token:
            auth = {"authorization": f"Bearer {token}"}
        super().__init__(
            name, base_url=endpoint, headers={**auth, **(headers or {})}, query=query,
            secrets=(api_key or "", token or "", *secrets), max_connections=max_connections,
            timeout_s=timeout_s, connect_timeout_s=connect_timeout_s, transport=transport,
        )  # fmt: skip
        self.api_version = api_version
        self._paths: dict[str, str] = {}

    def _request(self, request: ChatRequest) -> tuple[str, bytes, dict[str, str] | None]:
        return self._completions(request.model), orjson.dumps(_request_body(request)), None

    def _completions(self, model: str) -> str:
        """The chat completions path of deployment ``model``, with its query."""
        path = self._paths.get(model)
        if path is None:
            deployment = urllib.parse.quote(model, safe="")
            path = self._paths[model] = self._path(
                f"/openai/deployments/{deployment}/chat/completions",
                {"api-version": self.api_version},
            )
        return path

    async def stream(
        self,
        request: ChatRequest,
        *,
        on_delta: Callable[[str], None],
        timeout_s: float | None = None,
    ) -> ChatResponse:
        """The reply as OpenAI's server-sent events, the usage from the final event
        (``stream_options.include_usage``; :mod:`fanout.providers._azure_stream`)."""
        path = self._completions(request.model)
        body = {**_request_body(request), "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        decoder = AzureStream(self.name, on_delta)
        return await stream_call(self, request, path, orjson.dumps(body), None, decoder, timeout_s)

    def _reply(self, data: object, headers: dict[str, str]) -> ChatResponse:
        assert isinstance(data, dict)
        choice = data["choices"][0]
        message = choice["message"]
        calls = tuple(
            ToolCall(
                id=str(c["id"]),
                name=str(c["function"]["name"]),
                arguments=str(c["function"].get("arguments") or "{}"),
            )
            for c in message.get("tool_calls") or ()
        )
        content = message.get("content")
        finish = str(choice.get("finish_reason") or "stop")
        if finish == "content_filter" and not content and not calls:
            raise ContentFiltered(
                f"{self.name}: the reply was filtered by Azure's content filter "
                f"({_filtered(choice.get('content_filter_results'))})",
                provider=self.name,
                status_code=200,
                headers=headers,
            )
        return ChatResponse(
            content=content if isinstance(content, str) else None,
            usage=completion_usage(data["usage"]),
            finish_reason=finish,
            tool_calls=calls,
            model=str(data.get("model") or ""),
            headers=headers,
        )


def _filtered(results: object) -> str:
    """The categories a content filter result marks filtered ("hate, violence")."""
    if not isinstance(results, dict):
        return "no details"
    names = [k for k, v in results.items() if isinstance(v, dict) and v.get("filtered")]
    return ", ".join(names) or "no category named"
