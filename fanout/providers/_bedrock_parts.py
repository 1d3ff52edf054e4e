"""Content parts on Bedrock's Converse API: ``text`` blocks and ``image`` blocks
(``format`` png, jpeg, gif or webp and ``source.bytes``, base64 in the JSON body, from a
data URI). Converse takes no audio, and an image by http(s) URL is refused before the
call (it reads only bytes or S3). Estimated as Anthropic counts (Claude on Bedrock)."""

from __future__ import annotations

from fanout._media import data_uri_b64
from fanout.providers._anthropic_parts import image_problem
from fanout.providers._media_tokens import claude_media_tokens
from fanout.types import ContentPart

__all__ = ["BedrockParts", "bedrock_block"]


class BedrockParts:
    """What Converse takes beside text: images, as bytes."""

    accepts: frozenset[str] = frozenset({"text", "image"})

    @staticmethod
    def media_tokens(part: ContentPart) -> int:
        return claude_media_tokens(part)

    @staticmethod
    def part_problem(part: ContentPart) -> str | None:
        return image_problem(part, urls=False)


def bedrock_block(part: ContentPart) -> dict[str, object]:
    """A content part as a Converse content block (text or image)."""
    if part.get("type") == "image_url":
        url = str(part["image_url"]["url"])  # type: ignore[typeddict-item]
        found = data_uri_b64(url)
        if found is None:
            raise ValueError("bedrock: an image must be a data URI (Converse takes bytes)")
        return {"image": {"format": found[0].removeprefix("image/"),
                          "source": {"bytes": found[1]}}}  # fmt: skip
    return {"text": str(part.get("text") or "")}
