"""Content parts' sizes: image dimensions from data URIs, and the token estimates of
images (OpenAI's, Anthropic's and Gemini's published formulas) and audio, for
reservations before a call."""

from __future__ import annotations

import base64
import binascii
import math
import struct

__all__ = [
    "CLAUDE_MAX_IMAGE_TOKENS",
    "GEMINI_UNKNOWN_IMAGE_TOKENS",
    "UNKNOWN_IMAGE_TOKENS",
    "audio_tokens",
    "claude_image_tokens",
    "data_uri",
    "data_uri_b64",
    "gemini_image_tokens",
    "image_size",
    "image_tokens",
]

_BASE_TOKENS = 85  # every image, and all of a detail="low" one
_TILE_TOKENS = 170  # per 512 px tile of a detail="high" image
_TILE_PX = 512
_FIT_PX = 2048  # first scaled to fit a 2048 x 2048 square
_SHORT_PX = 768  # then its shortest side to 768
# An image whose size is unknown (a URL, an unreadable data URI), at "high"/"auto": the
# most tiles any image can take (768 x 2048 after scaling: 2 x 4 tiles), so a reservation
# is never short; the provider's reported usage settles the difference.
UNKNOWN_IMAGE_TOKENS = _BASE_TOKENS + _TILE_TOKENS * 8
_AUDIO_TOKENS_PER_S = 10  # gpt-4o audio input: about 600 tokens a minute
# Anthropic: an image whose long edge passes 1568 px is scaled down to it, and one of more
# than ~1,600 tokens (about 1.15 megapixels) is scaled down to that; tokens = w * h / 750
_CLAUDE_EDGE_PX = 1568
_CLAUDE_PX_PER_TOKEN = 750
CLAUDE_MAX_IMAGE_TOKENS = 1600
# Gemini (2.0 on): an image within 384 x 384 is 258 tokens; a larger one is cut into
# 768 x 768 tiles of 258 tokens each
_GEMINI_TILE_TOKENS = 258
_GEMINI_SMALL_PX = 384
_GEMINI_TILE_PX = 768
# an image of unknown size (a URI Gemini fetches): four tiles, settled by the usage
GEMINI_UNKNOWN_IMAGE_TOKENS = 4 * _GEMINI_TILE_TOKENS
_AUDIO_BYTES_PER_S = 2_000  # a pessimistic 16 kbit/s for a compressed format


def image_tokens(width: int | None, height: int | None, detail: str = "auto") -> int:
    """Prompt tokens of one image as OpenAI counts them (GPT-4o family): ``detail="low"``
    is 85; otherwise the image is scaled to fit 2048 x 2048, then its shortest side to
    768 px, and costs 170 per 512 px tile plus 85. Unknown size: the worst case."""
    if detail == "low":
        return _BASE_TOKENS
    if not width or not height:
        return UNKNOWN_IMAGE_TOKENS
    w, h = float(width), float(height)
    if max(w, h) > _FIT_PX:
        scale = _FIT_PX / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > _SHORT_PX:
        scale = _SHORT_PX / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / _TILE_PX) * math.ceil(h / _TILE_PX)
    return _BASE_TOKENS + _TILE_TOKENS * tiles


def claude_image_tokens(width: int | None, height: int | None) -> int:
    """Prompt tokens of one image as Anthropic counts them: scaled to a long edge of at
    most 1568 px, then ``width * height / 750``, at most ~1,600 (a larger image is scaled
    down to that). Unknown size: the most, 1,600."""
    if not width or not height:
        return CLAUDE_MAX_IMAGE_TOKENS
    w, h = float(width), float(height)
    if max(w, h) > _CLAUDE_EDGE_PX:
        scale = _CLAUDE_EDGE_PX / max(w, h)
        w, h = w * scale, h * scale
    return min(CLAUDE_MAX_IMAGE_TOKENS, max(1, math.ceil(w * h / _CLAUDE_PX_PER_TOKEN)))


def gemini_image_tokens(width: int | None, height: int | None) -> int:
    """Prompt tokens of one image as Gemini counts them: 258 within 384 x 384, else 258
    per 768 x 768 tile. Unknown size: four tiles (1,032)."""
    if not width or not height:
        return GEMINI_UNKNOWN_IMAGE_TOKENS
    if width <= _GEMINI_SMALL_PX and height <= _GEMINI_SMALL_PX:
        return _GEMINI_TILE_TOKENS
    tiles = math.ceil(width / _GEMINI_TILE_PX) * math.ceil(height / _GEMINI_TILE_PX)
    return _GEMINI_TILE_TOKENS * tiles


def data_uri_b64(url: str) -> tuple[str, str] | None:
    """``(media_type, base64 payload)`` of a base64 ``data:`` URI, not decoded (a protocol
    that wants base64 sends it on as it is); ``None`` for any other URL."""
    if not url.startswith("data:"):
        return None
    header, comma, payload = url[5:].partition(",")
    if not comma or not header.endswith(";base64") or not payload:
        return None
    media_type = header.removesuffix(";base64").lower()
    return ("image/jpeg" if media_type == "image/jpg" else media_type), payload


def data_uri(url: str) -> tuple[str, bytes] | None:
    """``(media_type, bytes)`` of a base64 ``data:`` URI; ``None`` for any other URL."""
    if not url.startswith("data:"):
        return None
    header, comma, payload = url[5:].partition(",")
    if not comma or not header.endswith(";base64"):
        return None
    try:
        return header.removesuffix(";base64"), base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        return None


def image_size(url: str) -> tuple[int, int] | None:
    """An image's ``(width, height)`` from a data URI (PNG, GIF, JPEG, WebP); else ``None``."""
    found = data_uri(url)
    if found is None:
        return None
    raw = found[1]
    try:
        if raw[:8] == b"\x89PNG\r\n\x1a\n":
            width, height = struct.unpack(">II", raw[16:24])
            return int(width), int(height)
        if raw[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", raw[6:10])
            return int(width), int(height)
        if raw[:2] == b"\xff\xd8":
            return _jpeg_size(raw)
        if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
            return _webp_size(raw)
    except struct.error:
        return None
    return None


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 9 < len(raw):
        if raw[at] != 0xFF:
            return None
        marker = raw[at + 1]
        length = struct.unpack(">H", raw[at + 2 : at + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            height, width = struct.unpack(">HH", raw[at + 5 : at + 9])
            return width, height
        at += 2 + length
    return None


def _webp_size(raw: bytes) -> tuple[int, int] | None:
    kind = raw[12:16]
    if kind == b"VP8X":
        w = int.from_bytes(raw[24:27], "little") + 1
        h = int.from_bytes(raw[27:30], "little") + 1
        return w, h
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", raw[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L":
        bits = int.from_bytes(raw[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def audio_tokens(data_b64: str, fmt: str, tokens_per_s: float = _AUDIO_TOKENS_PER_S) -> int:
    """Prompt tokens of an ``input_audio`` part, estimated from its duration (a WAV's
    header; other formats at a pessimistic 16 kbit/s), ``tokens_per_s`` a second
    (OpenAI's 10 by default; Gemini counts 32)."""
    size = len(data_b64) * 3 // 4
    seconds = size / _AUDIO_BYTES_PER_S
    if fmt == "wav":
        try:
            head = base64.b64decode(data_b64[:64])
            byte_rate = struct.unpack("<I", head[28:32])[0]
            if head[:4] == b"RIFF" and byte_rate > 0:
                seconds = size / byte_rate
        except (binascii.Error, struct.error, ValueError):
            pass
    return max(1, math.ceil(seconds * tokens_per_s))
