"""Content parts (OpenAI-style: text, ``image_url``, ``input_audio``) from prompt
functions: an image sent to the emulator and counted by OpenAI's tile formula, and
refused, before any call, by a provider or a model that cannot take it."""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import Emulator, start_emulator

from fanout import DAG, Engine, parse_config
from fanout.errors import ConfigError
from fanout.trace import trace_files
from fanout.types import Message

KEY = "sk-fanout-parts-0123456789-SECRET"


def png_data_uri(width: int, height: int) -> str:
    """A real (blank, grey) PNG of ``width`` x ``height`` as a data URI."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80" * width for _ in range(height)))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
    png += chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


IMAGE = png_data_uri(1024, 1024)  # 765 tokens at detail "high" (4 tiles + 85)


def describe(values: Mapping[str, object]) -> list[Message]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"Describe this photo of {values['what']}."},
                {"type": "image_url", "image_url": {"url": IMAGE, "detail": "high"}},
            ],
        }
    ]


def photo_dag() -> DAG:
    dag = DAG("photos")
    dag.output(
        caption=dag.llm("looker", describe, what=dag.input("what"), max_tokens=20, name="caption")
    )
    return dag


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    from fanout.sim.server import EmulatorConfig

    with start_emulator(EmulatorConfig(api_key=KEY)) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _fresh(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.reset()
    monkeypatch.setenv("FANOUT_PARTS_KEY", KEY)


def openai_config(emulator: Emulator, **model: object) -> object:
    return parse_config(
        {
            "providers": {
                "emu": {
                    "kind": "openai",
                    "base_url": emulator.base_url,
                    "api_key_env": "FANOUT_PARTS_KEY",
                }
            },
            "models": {"looker": {"provider": "emu", "model": "sim-small", **model}},
        }
    )


def test_an_image_part_reaches_the_provider_and_is_counted_by_the_tile_formula(
    emulator: Emulator, tmp_path: Path
) -> None:
    async def main() -> object:
        async with Engine(openai_config(emulator), traces=tmp_path) as engine:  # type: ignore[arg-type]
            return await engine.run(photo_dag(), {"what": "a chair"})

    result = asyncio.run(main())
    assert result.status == "ok", result.error_message  # type: ignore[attr-defined]
    assert emulator.stats()["accepted"] == 1
    (row,) = [
        r
        for path in trace_files(tmp_path).parts
        for r in pq.read_table(path).to_pylist()
        if r["record_type"] == "attempt"
    ]
    # reserved by OpenAI's formula (1024 x 1024 at "high": 765) plus the text; the
    # emulator counts the image the same way, so what was reported settles near it
    assert row["estimated_input_tokens"] >= 765
    assert row["input_tokens"] >= 765
    assert abs(row["input_tokens"] - row["estimated_input_tokens"]) < 20


def test_a_model_flagged_text_only_refuses_an_image_before_any_call(
    emulator: Emulator,
) -> None:
    async def main() -> object:
        async with Engine(openai_config(emulator, modalities=["text"])) as engine:  # type: ignore[arg-type]
            return await engine.run(photo_dag(), {"what": "a chair"})

    result = asyncio.run(main())
    node = result.nodes["caption"]  # type: ignore[attr-defined]
    assert node.status == "error" and node.error_type == "ConfigError"
    assert "'looker'" in node.error_message and "['image']" in node.error_message
    assert emulator.stats()["accepted"] == 0  # refused here, not by the provider
    assert KEY not in node.error_message


def test_the_sim_provider_takes_text_only_and_says_so() -> None:
    config = parse_config(
        {
            "providers": {"sim": {"kind": "sim", "latency_ms": 0}},
            "models": {"looker": {"provider": "sim", "model": "sim-small"}},
        }
    )

    async def main() -> object:
        async with Engine(config) as engine:
            return await engine.run(photo_dag(), {"what": "a chair"})

    result = asyncio.run(main())
    node = result.nodes["caption"]  # type: ignore[attr-defined]
    assert node.status == "error" and "cannot take content parts" in node.error_message


def test_a_config_that_claims_images_its_provider_cannot_carry_is_refused() -> None:
    config = parse_config(
        {
            "providers": {"sim": {"kind": "sim"}},
            "models": {
                "looker": {"provider": "sim", "model": "m", "modalities": ["text", "image"]}
            },
        }
    )

    async def main() -> None:
        async with Engine(config) as engine:
            await engine.run(photo_dag(), {"what": "x"})

    with pytest.raises(ConfigError, match=r"models\.looker\.modalities lists \['image'\]"):
        asyncio.run(main())


def test_a_step_that_declares_its_media_is_refused_when_the_run_starts(
    emulator: Emulator,
) -> None:
    dag = DAG("declared")
    what = dag.input("what")
    dag.output(caption=dag.llm("looker", describe, what=what, media=["image"], name="caption"))
    engine = Engine(openai_config(emulator, modalities=["text"]))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"node 'caption' sends \['image'\] parts"):
        engine.validate(dag)
    assert emulator.stats()["accepted"] == 0
    with pytest.raises(ConfigError, match="media must list"):
        DAG("bad").llm("looker", describe, media=["video"])
    accepting = Engine(openai_config(emulator))  # type: ignore[arg-type]
    accepting.validate(dag)  # the openai protocol carries images
