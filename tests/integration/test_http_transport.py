"""The providers' hot paths over loopback (aiohttp, and pyreqwest with ``http_client =
reqwest``): pooling, keep-alive, errors, loops, traps, streaming."""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from types import ModuleType

import orjson
import pytest
from support import Emulator, start_emulator

from fanout import ChatRequest, ProviderConnectionError, ProviderTimeout
from fanout.providers import OpenAIProvider
from fanout.providers._http import HttpClient, env_proxy
from fanout.providers._reqwest import RUNTIME_THREAD, batch_scheduled, named_threads
from fanout.sim.server import EmulatorConfig

KEY = "sk-transport-test-0123456789-SECRET"
REQUEST = ChatRequest(model="sim-small", messages=[{"role": "user", "content": "great"}])
REPLY = orjson.dumps(
    {
        "model": "m",
        "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(api_key=KEY)) as running:
        yield running


@pytest.fixture(params=["aiohttp", "reqwest"])
def client(request: pytest.FixtureRequest) -> HttpClient:
    """Each test runs over both hot paths."""
    name: HttpClient = request.param
    return name


class _CountingServer:
    """A bare HTTP/1.1 keep-alive server that counts connections (total and at once)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.peak = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests += 1
                await asyncio.sleep(0.02)  # calls overlap, so the pool's cap is what binds
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(REPLY), REPLY)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


@pytest.fixture
async def counting() -> AsyncIterator[tuple[_CountingServer, str]]:
    counts = _CountingServer()
    server = await asyncio.start_server(counts.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield counts, f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()


async def test_connections_are_capped_and_kept_alive(
    counting: tuple[_CountingServer, str], client: HttpClient
) -> None:
    counts, url = counting
    provider = OpenAIProvider("cap", base_url=url, max_connections=4, transport=client)
    replies = await asyncio.gather(*(provider.complete(REQUEST, timeout_s=10) for _ in range(40)))
    await provider.aclose()
    assert all(r.content == "ok" for r in replies)
    assert counts.requests == 40
    assert counts.peak == 4  # never more than max_connections at once ...
    assert counts.accepted == 4  # ... and each reused (keep-alive), not reopened per call


async def test_refused_connection_is_a_connection_error_without_the_key(
    client: HttpClient,
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenAIProvider(
        "down", base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, transport=client
    )
    with pytest.raises(ProviderConnectionError, match="connection failed") as info:
        await provider.complete(REQUEST, timeout_s=5)
    await provider.aclose()
    assert KEY not in str(info.value) and KEY not in repr(provider)


async def test_a_hang_is_a_timeout_within_the_call_deadline(
    emulator: Emulator, client: HttpClient
) -> None:
    emulator.reset()
    emulator.faults(hang_rate=1.0)
    provider = OpenAIProvider("hang", base_url=emulator.base_url, api_key=KEY, transport=client)
    try:
        with pytest.raises(ProviderTimeout, match=r"no answer within 0\.2s"):
            await provider.complete(REQUEST, timeout_s=0.2)
    finally:
        emulator.faults(hang_rate=0.0)
        await provider.aclose()
    assert emulator.stats()["accepted"] == 1


def test_one_provider_serves_two_event_loops(emulator: Emulator, client: HttpClient) -> None:
    """An engine may outlive its loop (``run_sync`` twice): the session is made anew."""
    emulator.reset()
    provider = OpenAIProvider("loops", base_url=emulator.base_url, api_key=KEY, transport=client)
    first = asyncio.run(provider.complete(REQUEST, timeout_s=5))

    async def again() -> str | None:
        reply = await provider.complete(REQUEST, timeout_s=5)
        await provider.aclose()
        return reply.content

    assert asyncio.run(again()) == first.content == "sim reply: great"
    assert emulator.stats()["accepted"] == 2


class _ImportCounter(importlib.abc.MetaPathFinder):
    """Counts module look-ups: a failed import on every call (httpcore's sniffio trap)
    shows up here as one look-up per call."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        self.names.append(fullname)
        return None


async def test_the_hot_path_imports_nothing_per_call(
    emulator: Emulator, client: HttpClient
) -> None:
    provider = OpenAIProvider("traps", base_url=emulator.base_url, api_key=KEY, transport=client)
    await provider.complete(REQUEST, timeout_s=5)  # the first call may import what it needs
    counter = _ImportCounter()
    sys.meta_path.insert(0, counter)
    try:
        for _ in range(20):
            await provider.complete(REQUEST, timeout_s=5)
    finally:
        sys.meta_path.remove(counter)
        await provider.aclose()
    assert counter.names == []


def test_proxies_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://api.vendor.example/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert env_proxy("https://api.vendor.example/v1") == "http://proxy.internal:3128"
    assert env_proxy("http://api.vendor.example/v1") is None  # no HTTP_PROXY
    assert env_proxy("https://127.0.0.1:8000/v1") is None  # NO_PROXY


async def test_a_stream_reaches_the_caller_while_the_server_still_sends(
    client: HttpClient,
) -> None:
    """Each server-sent event as it arrives, not the body buffered (pyreqwest holds a
    streamed body back until 64 KiB arrived unless told not to)."""
    with start_emulator(EmulatorConfig(latency_ms=1, latency_per_token_ms=10)) as emu:
        provider = OpenAIProvider("sse", base_url=emu.base_url, transport=client)
        open_at: list[int] = []

        def on_delta(piece: str) -> None:
            if piece and not open_at:
                open_at.append(emu.stats()["streams_open"])

        story = ChatRequest(
            model="sim-small",
            messages=[{"role": "user", "content": "Tell a long story about a lighthouse"}],
            max_tokens=40,
            stream=True,
        )
        try:
            reply = await provider.stream(story, on_delta=on_delta, timeout_s=10)
        finally:
            await provider.aclose()
    assert reply.usage.output_tokens > 10
    assert open_at == [1]  # the first piece was read while the server's stream was open


async def test_the_configured_client_is_the_hot_path(client: HttpClient) -> None:
    provider = OpenAIProvider(
        "which", base_url="http://127.0.0.1:9/v1", api_key=KEY, transport=client
    )
    name = type(provider._http).__name__
    await provider.aclose()
    assert name == {"aiohttp": "AiohttpTransport", "reqwest": "ReqwestTransport"}[client]
    assert KEY not in repr(provider._http)


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")
async def test_pyreqwest_runtime_thread_is_batch_scheduled(emulator: Emulator) -> None:
    """Opening the client marks the runtime's thread SCHED_BATCH (so it does not preempt
    the loop on a busy core), and nothing else: the loop's own thread keeps its policy."""
    provider = OpenAIProvider("batch", base_url=emulator.base_url, api_key=KEY, transport="reqwest")
    try:
        await provider.complete(REQUEST, timeout_s=5)  # the runtime's thread exists from here on
        threads = named_threads(RUNTIME_THREAD)
        for tid in threads:  # as a process that never opened a client would have it
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        assert batch_scheduled(RUNTIME_THREAD) == len(threads) >= 1
        assert {os.sched_getscheduler(tid) for tid in threads} == {os.SCHED_BATCH}
        assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER
        assert batch_scheduled(RUNTIME_THREAD) == 0  # already batch: nothing to change
        reply = await provider.complete(REQUEST, timeout_s=5)  # and calls still get answered
    finally:
        await provider.aclose()
    assert reply.content
