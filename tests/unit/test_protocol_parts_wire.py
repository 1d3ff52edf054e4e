"""Images, audio and embeddings on the Anthropic, Azure, Bedrock and Gemini clients over
httpx.MockTransport: the blocks and bodies as each vendor documents them, vectors and
usage read back, and each protocol's published image-token formula."""

from __future__ import annotations

import json

import httpx
import pytest

from fanout import ChatRequest
from fanout._media import claude_image_tokens, gemini_image_tokens
from fanout.errors import InvalidResponse
from fanout.providers import (
    AnthropicProvider,
    AzureOpenAIProvider,
    BedrockProvider,
    GeminiProvider,
    part_problem,
)
from fanout.types import EmbedRequest, Message

KEY = "sk-ant-test-SECRET-0123456789abcdef"
PNG = "data:image/png;base64,iVBORw0KGgo="
PHOTO: Message = {"role": "user", "content": [
    {"type": "text", "text": "What is this?"},
    {"type": "image_url", "image_url": {"url": PNG}},
]}  # fmt: skip


class _Frozen:
    access_key, secret_key, token = "AKIAPARTSTEST0000001", "parts/SECRET/key0123456789", None


class _Credentials:
    def get_frozen_credentials(self) -> _Frozen:
        return _Frozen()


def mock(seen: list[httpx.Request], body: object, **headers: str) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body, headers=headers)

    return httpx.MockTransport(handle)


def bedrock(seen: list[httpx.Request], body: object, **headers: str) -> BedrockProvider:
    return BedrockProvider("br", region="eu-west-1", credentials=_Credentials(),
                           transport=mock(seen, body, **headers))  # fmt: skip


def test_each_protocols_image_block() -> None:
    request = ChatRequest(model="m", messages=[PHOTO])
    anthropic = AnthropicProvider("a", api_key=KEY, base_url="http://x").body(request)
    assert anthropic["messages"] == [{"role": "user", "content": [  # type: ignore[comparison-overlap]
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}}]}]  # fmt: skip
    gemini = GeminiProvider("g", api_key=KEY, base_url="http://x").body(request)
    assert gemini["contents"] == [{"role": "user", "parts": [  # type: ignore[comparison-overlap]
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]}]  # fmt: skip
    converse = bedrock([], {}).body(request)
    assert converse["messages"] == [{"role": "user", "content": [  # type: ignore[comparison-overlap]
        {"text": "What is this?"},
        {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]}]  # fmt: skip


def test_urls_and_audio_where_each_protocol_takes_them() -> None:
    by_url: Message = {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]}  # fmt: skip
    request = ChatRequest(model="m", messages=[by_url])
    gemini = GeminiProvider("g", api_key=KEY, base_url="http://x")
    assert gemini.body(request)["contents"][0]["parts"] == [  # type: ignore[index]
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.png"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
    ]
    assert gemini.accepts == {"text", "image", "audio"}
    anthropic = AnthropicProvider("a", api_key=KEY, base_url="http://x")
    assert anthropic.accepts == {"text", "image"}
    assert part_problem(anthropic, request) is None  # a URL source; audio is refused by kind
    assert "base64 data URI" in str(part_problem(bedrock([], {}), request))
    tiff = ChatRequest(model="m", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}])  # fmt: skip
    assert "JPEG, PNG, GIF or WebP" in str(part_problem(anthropic, tiff))


def test_the_vendors_image_token_formulas() -> None:
    assert claude_image_tokens(1024, 1024) == 1399  # 1024 * 1024 / 750
    assert claude_image_tokens(200, 200) == 54
    assert claude_image_tokens(4000, 3000) == 1600  # scaled down to ~1,600
    assert claude_image_tokens(None, None) == 1600
    assert gemini_image_tokens(384, 384) == 258
    assert gemini_image_tokens(1024, 1024) == 4 * 258  # 2 x 2 tiles of 768
    assert gemini_image_tokens(2000, 1500) == 6 * 258


async def test_azure_embeddings_go_to_the_deployment_with_the_api_version() -> None:
    seen: list[httpx.Request] = []
    reply = {"data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1, 0]}],
             "model": "text-embedding-3-small", "usage": {"prompt_tokens": 7}}  # fmt: skip
    azure = AzureOpenAIProvider("az", endpoint="https://r.openai.azure.com", api_key=KEY,
                                transport=mock(seen, reply))  # fmt: skip
    out = await azure.embed(EmbedRequest("emb-prod", ("a", "b"), 2))
    assert out.vectors == ((1.0, 0.0), (0.0, 1.0)) and out.usage.input_tokens == 7
    (sent,) = seen
    assert sent.url.path == "/openai/deployments/emb-prod/embeddings"
    assert sent.url.params["api-version"] == "2024-10-21"
    assert sent.headers["api-key"] == KEY
    assert json.loads(sent.content) == {"input": ["a", "b"], "encoding_format": "float",
                                        "dimensions": 2}  # fmt: skip
    assert azure.max_inputs == 2048


async def test_gemini_batch_embed_body_and_usage_read_or_estimated() -> None:
    seen: list[httpx.Request] = []
    reply = {"embeddings": [{"values": [0.6, 0.8]}, {"values": [1.0, 0.0]}]}
    gemini = GeminiProvider("g", api_key=KEY, transport=mock(seen, reply))
    out = await gemini.embed(EmbedRequest("gemini-embedding-001", ("abcdefgh", "x"), 2))
    assert out.vectors == ((0.6, 0.8), (1.0, 0.0))
    assert out.usage.input_tokens == 3  # none reported: the estimate, chars / 4
    assert seen[0].url.path.endswith("/models/gemini-embedding-001:batchEmbedContents")
    assert json.loads(seen[0].content)["requests"][0] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "abcdefgh"}]},
        "outputDimensionality": 2,
    }
    counted = {**reply, "usageMetadata": {"promptTokenCount": 11}}
    gemini = GeminiProvider("g", api_key=KEY, transport=mock([], counted))
    assert (await gemini.embed(EmbedRequest("m", ("a", "b")))).usage.input_tokens == 11
    short = GeminiProvider("g", api_key=KEY, transport=mock([], {"embeddings": []}))
    with pytest.raises(InvalidResponse, match="0 vectors for 1 inputs"):
        await short.embed(EmbedRequest("m", ("a",)))
    assert gemini.max_inputs == 100


async def test_bedrock_titan_and_cohere_invoke_bodies_and_token_counts() -> None:
    seen: list[httpx.Request] = []
    titan = bedrock(seen, {"embedding": [0.0, 1.0], "inputTextTokenCount": 5})
    out = await titan.embed(EmbedRequest("amazon.titan-embed-text-v2:0", ("one",), 256))
    assert out.usage.input_tokens == 5 and out.vectors == ((0.0, 1.0),)
    assert seen[0].url.raw_path == b"/model/amazon.titan-embed-text-v2%3A0/invoke"
    assert json.loads(seen[0].content) == {"inputText": "one", "dimensions": 256}
    assert seen[0].headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
    assert titan.max_inputs_for("amazon.titan-embed-text-v2:0") == 1
    seen.clear()
    reply = {"embeddings": [[1.0], [0.5]], "response_type": "embeddings_floats"}
    cohere = bedrock(seen, reply, **{"X-Amzn-Bedrock-Input-Token-Count": "9"})
    out = await cohere.embed(EmbedRequest("cohere.embed-english-v3", ("a", "b")))
    assert out.usage.input_tokens == 9 and out.vectors == ((1.0,), (0.5,))
    assert json.loads(seen[0].content) == {"texts": ["a", "b"], "input_type": "search_document"}
    assert cohere.max_inputs_for("cohere.embed-english-v3") == 96
    assert cohere.embed_problem("us.cohere.embed-english-v3") is None
    assert "neither" in str(cohere.embed_problem("anthropic.claude-3-haiku-20240307-v1:0"))


def test_an_image_jpg_data_uri_goes_as_jpeg() -> None:
    jpg: Message = {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}}]}  # fmt: skip
    request = ChatRequest(model="m", messages=[jpg])
    block = bedrock([], {}).body(request)["messages"][0]["content"][0]  # type: ignore[index]
    assert block == {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}}
    assert part_problem(bedrock([], {}), request) is None
