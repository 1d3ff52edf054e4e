"""A streamed Azure OpenAI reply put together: OpenAI's ``chat.completion.chunk`` events
(:class:`~fanout.providers._openai_stream.StreamAssembler`), read for
:func:`~fanout.providers._jsonstream.stream_call`, with Azure's content filter: a reply
it cut to nothing (finish reason ``content_filter``) is
:class:`~fanout.errors.ContentFiltered`, as unstreamed."""

from __future__ import annotations

from collections.abc import Callable

from fanout.errors import ContentFiltered
from fanout.providers._openai_stream import StreamAssembler
from fanout.providers._sse import SSEParser
from fanout.types import ChatResponse, Usage

__all__ = ["AzureStream"]


class AzureStream:
    """Hears an Azure chat completions stream's bytes; ``on_delta`` hears each piece.
    Without a final usage event (an ``api-version`` older than
    ``stream_options.include_usage``) the usage is 0, settled by estimate."""

    __slots__ = ("_assembler", "_name", "_parser")

    def __init__(self, name: str, on_delta: Callable[[str], None]) -> None:
        self._name = name
        self._assembler = StreamAssembler(on_delta)
        self._parser = SSEParser()

    @property
    def chunks(self) -> int:
        return self._assembler.chunks

    @property
    def done(self) -> bool:
        return self._assembler.done

    @property
    def complete(self) -> bool:
        return self._assembler.done

    def feed(self, data: bytes) -> None:
        for event in self._parser.feed(data):
            self._assembler.event(event)

    def response(self, headers: dict[str, str]) -> ChatResponse:
        assembler = self._assembler
        usage = assembler.usage or Usage(0, 0)
        response = assembler.response(usage, headers)
        if response.finish_reason == "content_filter" and not response.content and not (
            response.tool_calls
        ):
            raise ContentFiltered(
                f"{self._name}: the reply was filtered by Azure's content filter",
                provider=self._name,
                status_code=200,
                headers=headers,
            )
        return response
