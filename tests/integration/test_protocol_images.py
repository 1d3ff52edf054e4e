"""Image (and audio) content parts on the Anthropic, Azure, Bedrock and Gemini protocols
against the emulator on loopback: each protocol's block shape as the emulator checks it,
the client's estimate close to what the emulator counts the vendor's way, and parts a
protocol cannot take refused before any call, the key in no error or trace."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import Emulator, start_emulator
from support_protocols import SECRETS, aws_env, one_model
from test_content_parts import png_data_uri

from fanout import DAG, Engine
from fanout.sim.server import EmulatorConfig
from fanout.trace import trace_files
from fanout.types import ContentPart, Message

PHOTO = png_data_uri(2000, 1500)
MODELS = {
    "anthropic": "claude-3-5-haiku-latest",
    "azure": "gpt-4o-mini-prod",
    "bedrock": "anthropic.claude-3-haiku-20240307-v1:0",
    "gemini": "gemini-2.0-flash",
}
# the block the emulator saw, and what it counted for a 2000 x 1500 photo
SEEN = {
    "anthropic": ("anthropic:base64", 1534),  # 1568 x 1176 px, then 1.15 megapixels, / 750
    "bedrock": ("bedrock:bytes", 1534),
    "gemini": ("gemini:inlineData", 1548),  # 3 x 2 tiles of 258
}


def wav_b64(seconds: float) -> str:
    """A real WAV (16 kHz, 16-bit mono, silent) of ``seconds``, base64."""
    rate, frames = 16_000, int(16_000 * seconds)
    data = b"\x00\x00" * frames
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return base64.b64encode(header + b"data" + struct.pack("<I", len(data)) + data).decode()


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(api_key=SECRETS[0])) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _fresh(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    emulator.reset()
    aws_env(monkeypatch, tmp_path)


def dag_of(part: ContentPart) -> DAG:
    def prompt(values: Mapping[str, object]) -> list[Message]:
        text: ContentPart = {"type": "text", "text": f"Describe this {values['what']}."}
        return [{"role": "user", "content": [text, part]}]

    dag = DAG("media")
    dag.output(caption=dag.llm("m", prompt, what=dag.input("what"), max_tokens=20, name="cap"))
    return dag


IMAGE: ContentPart = {"type": "image_url", "image_url": {"url": PHOTO, "detail": "high"}}


def attempt_rows(traces: Path) -> list[dict[str, object]]:
    return [
        r
        for path in trace_files(traces).parts
        for r in pq.read_table(path).to_pylist()
        if r["record_type"] == "attempt"
    ]


@pytest.mark.parametrize("protocol", ["anthropic", "bedrock", "gemini", "azure"])
async def test_an_image_is_sent_as_the_protocols_block_and_estimated_its_way(
    protocol: str, emulator: Emulator, tmp_path: Path
) -> None:
    cfg = one_model(protocol, emulator.root, MODELS[protocol])
    async with Engine(cfg, traces=tmp_path / "traces") as engine:
        result = await engine.run(dag_of(IMAGE), {"what": "photo"})
    assert result.status == "ok", result.error_message
    stats = emulator.stats()
    (row,) = attempt_rows(tmp_path / "traces")
    estimate, used = int(row["estimated_input_tokens"]), int(row["input_tokens"])  # type: ignore[call-overload]
    if protocol == "azure":  # the OpenAI body: the emulator's OpenAI route counts tiles
        assert used >= 765 and abs(used - estimate) < 20
    else:
        kind, counted = SEEN[protocol]
        assert stats["media"] == {kind: 1}  # type: ignore[comparator-overlap]
        assert stats["media_tokens"] == counted
        assert used >= counted  # the image and the text
        assert estimate >= used  # reserved pessimistically ...
        assert (estimate - used) / used < 0.06  # ... and close: settled by the usage
    for path in trace_files(tmp_path / "traces").parts:
        data = path.read_bytes()
        assert all(secret.encode() not in data for secret in SECRETS)


async def test_gemini_takes_audio_as_inline_data_at_32_tokens_a_second(
    emulator: Emulator,
) -> None:
    audio: ContentPart = {"type": "input_audio",
                          "input_audio": {"data": wav_b64(2.0), "format": "wav"}}  # fmt: skip
    async with Engine(one_model("gemini", emulator.root, MODELS["gemini"])) as engine:
        result = await engine.run(dag_of(audio), {"what": "recording"})
    assert result.status == "ok", result.error_message
    stats = emulator.stats()
    assert stats["media"] == {"gemini:inlineData:audio": 1}  # type: ignore[comparator-overlap]
    assert stats["media_tokens"] == 64  # 2 s
    assert result.usage.input_tokens >= 64


@pytest.mark.parametrize("protocol", ["anthropic", "bedrock"])
async def test_audio_is_refused_before_any_call_where_the_protocol_takes_none(
    protocol: str, emulator: Emulator
) -> None:
    audio: ContentPart = {"type": "input_audio",
                          "input_audio": {"data": wav_b64(0.5), "format": "wav"}}  # fmt: skip
    async with Engine(one_model(protocol, emulator.root, MODELS[protocol])) as engine:
        result = await engine.run(dag_of(audio), {"what": "recording"})
    node = result.nodes["cap"]
    assert node.status == "error" and node.error_type == "ConfigError"
    assert "'m'" in node.error_message and "['audio']" in node.error_message
    assert "takes ['image', 'text']" in node.error_message
    assert emulator.stats()["accepted"] == 0
    assert all(secret not in node.error_message for secret in SECRETS)


async def test_bedrock_refuses_an_image_by_url_before_any_call(emulator: Emulator) -> None:
    by_url: ContentPart = {"type": "image_url",
                           "image_url": {"url": "https://example.com/chair.png"}}  # fmt: skip
    async with Engine(one_model("bedrock", emulator.root, MODELS["bedrock"])) as engine:
        result = await engine.run(dag_of(by_url), {"what": "photo"})
    node = result.nodes["cap"]
    assert node.status == "error" and node.error_type == "ConfigError"
    assert "base64 data URI" in node.error_message
    assert emulator.stats()["accepted"] == 0


async def test_anthropic_sends_an_image_url_as_a_url_source(emulator: Emulator) -> None:
    by_url: ContentPart = {"type": "image_url",
                           "image_url": {"url": "https://example.com/chair.png"}}  # fmt: skip
    async with Engine(one_model("anthropic", emulator.root, MODELS["anthropic"])) as engine:
        result = await engine.run(dag_of(by_url), {"what": "photo"})
    assert result.status == "ok", result.error_message
    assert emulator.stats()["media"] == {"anthropic:url": 1}  # type: ignore[comparator-overlap]


@pytest.mark.parametrize("protocol", ["anthropic", "bedrock", "gemini", "azure"])
async def test_a_model_flagged_text_only_refuses_an_image_before_any_call(
    protocol: str, emulator: Emulator
) -> None:
    cfg = one_model(protocol, emulator.root, MODELS[protocol], modalities=["text"])
    async with Engine(cfg) as engine:
        result = await engine.run(dag_of(IMAGE), {"what": "photo"})
    node = result.nodes["cap"]
    assert node.status == "error" and "['image']" in node.error_message
    assert emulator.stats()["accepted"] == 0
