"""Server-sent events read incrementally: bytes in, each event's data out (``[DONE]`` too)."""

from __future__ import annotations

__all__ = ["SSEParser"]


class SSEParser:
    """Splits a ``text/event-stream`` body into events as its bytes arrive.

    ``feed(chunk)`` returns the ``data`` of every event the chunk completed (several
    ``data:`` lines of one event joined by newlines); comments, ``event:``, ``id:`` and
    ``retry:`` fields are ignored (the OpenAI protocol uses ``data`` alone). A line may
    end in ``\\n``, ``\\r\\n`` or ``\\r``, and a chunk may end anywhere, mid-line included.
    """

    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        events: list[str] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return events
            end, skip = cut
            line = self._buffer[:end].decode("utf-8")
            self._buffer = self._buffer[end + skip :]
            if not line:  # a blank line ends an event
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value.removeprefix(" "))

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished event are held (a body cut mid-event)."""
        return bool(self._buffer.strip()) or bool(self._data)


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line of ``buffer`` ends and how long its terminator is."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, 1)
    if cr + 1 == len(buffer):
        return None  # "\r" at the end: a "\n" may follow in the next chunk
    return (cr, 2) if buffer[cr + 1 : cr + 2] == b"\n" else (cr, 1)
