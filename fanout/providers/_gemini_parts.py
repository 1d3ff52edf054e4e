"""Content parts on Gemini's generateContent: ``text`` parts, images and audio as
``inlineData`` (``mimeType`` and base64 ``data``, from a data URI or an ``input_audio``
part) and an image URL as ``fileData`` (``mimeType`` and ``fileUri``: a URI Gemini can
read, such as a Files API or ``gs://`` one). Estimated by Gemini's tiles and 32 audio
tokens a second."""

from __future__ import annotations

import mimetypes

from fanout._media import data_uri_b64
from fanout.providers._media_tokens import gemini_media_tokens
from fanout.types import MODALITIES, ContentPart

__all__ = ["GeminiParts", "gemini_part"]

_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3", "aiff": "audio/aiff",
                "aac": "audio/aac", "ogg": "audio/ogg", "flac": "audio/flac"}  # fmt: skip


class GeminiParts:
    """What generateContent takes: text, images and audio."""

    accepts: frozenset[str] = frozenset(MODALITIES)

    @staticmethod
    def media_tokens(part: ContentPart) -> int:
        return gemini_media_tokens(part)

    @staticmethod
    def part_problem(part: ContentPart) -> str | None:
        if part.get("type") == "input_audio":
            fmt = str((part.get("input_audio") or {}).get("format") or "")  # type: ignore[attr-defined]
            if fmt not in _AUDIO_TYPES:
                return f"audio must be one of {sorted(_AUDIO_TYPES)} (got {fmt!r})"
        return None


def gemini_part(part: ContentPart) -> dict[str, object]:
    """A content part as a Gemini ``Part``."""
    kind = part.get("type")
    if kind == "image_url":
        url = str(part["image_url"]["url"])  # type: ignore[typeddict-item]
        found = data_uri_b64(url)
        if found is None:
            guessed = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
            return {"fileData": {"mimeType": guessed, "fileUri": url}}
        return {"inlineData": {"mimeType": found[0], "data": found[1]}}
    if kind == "input_audio":
        audio = part["input_audio"]  # type: ignore[typeddict-item]
        mime = _AUDIO_TYPES[str(audio["format"])]
        return {"inlineData": {"mimeType": mime, "data": str(audio["data"])}}
    return {"text": str(part.get("text") or "")}
