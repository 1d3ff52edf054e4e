"""AWS event-stream frames written, as Bedrock's ConverseStream sends them.

botocore only decodes the format (``botocore.eventstream.EventStreamBuffer``), so the
emulator writes it itself; its tests read the frames back with botocore's decoder. A
frame is a 12-byte prelude (total length, headers length, both big-endian uint32, then
the CRC32 of those 8 bytes), the headers (each: a 1-byte name length, the name, a type
byte — 7, a string — a 2-byte value length and the value), the payload, and the CRC32
of everything before it.
"""

from __future__ import annotations

import struct
from binascii import crc32

__all__ = ["event_frame", "exception_frame", "frame"]

_STRING = 7


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: ``headers`` (string values) and ``payload``."""
    packed = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(packed) + len(payload) + 4
    prelude = struct.pack(">II", total, len(packed))
    prelude += struct.pack(">I", crc32(prelude) & 0xFFFFFFFF)
    message = prelude + packed + payload
    return message + struct.pack(">I", crc32(message) & 0xFFFFFFFF)


def event_frame(event_type: str, payload: bytes) -> bytes:
    """An ``event`` message of ``:event-type`` ``event_type`` with a JSON payload."""
    return frame(
        {":event-type": event_type, ":content-type": "application/json",
         ":message-type": "event"},
        payload,
    )  # fmt: skip


def exception_frame(exception_type: str, payload: bytes) -> bytes:
    """An ``exception`` message (``throttlingException``, ...) with a JSON payload."""
    return frame(
        {":exception-type": exception_type, ":content-type": "application/json",
         ":message-type": "exception"},
        payload,
    )  # fmt: skip


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name)) + raw_name
        + struct.pack(">BH", _STRING, len(raw_value)) + raw_value
    )  # fmt: skip
