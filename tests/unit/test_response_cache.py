"""``ResponseCache``: content-addressed replies, sampled calls only when asked, concurrent
writers, LRU eviction under the size limit, unreadable files ignored."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from fanout.errors import ConfigError
from fanout.run import ResponseCache, call_key
from fanout.types import ChatRequest, ChatResponse, ToolCall, Usage


def _request(text: str, temperature: float = 0.0) -> ChatRequest:
    return ChatRequest("m", [{"role": "user", "content": text}], 16, temperature)


def _reply(text: str) -> ChatResponse:
    return ChatResponse(text, Usage(3, 4), "stop", (ToolCall("c1", "t", "{}"),), "m")


def test_a_reply_comes_back_by_its_call_key(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    key = call_key("p", _request("hello"))
    assert cache.get(key) is None
    cache.put(key, _reply("hi"))
    assert cache.get(key) == _reply("hi")
    # another process (a new instance) sees it: the directory is the cache
    assert ResponseCache(tmp_path).get(key) == _reply("hi")
    assert call_key("p", _request("hello!")) != key
    assert (cache.hits, cache.misses, cache.writes) == (1, 1, 1)


def test_sampled_calls_are_cached_only_when_asked(tmp_path: Path) -> None:
    assert ResponseCache(tmp_path).cacheable(_request("x", 0.0))
    assert not ResponseCache(tmp_path).cacheable(_request("x", 0.7))
    assert ResponseCache(tmp_path, sampled=True).cacheable(_request("x", 0.7))


def test_concurrent_writers_leave_one_whole_file(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    key = call_key("p", _request("same"))
    threads = [
        threading.Thread(target=lambda: [cache.put(key, _reply("r")) for _ in range(50)])
        for _ in range(4)
    ]
    readers_saw: list[ChatResponse | None] = []
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        readers_saw.append(cache.get(key))
    for t in threads:
        t.join()
    assert all(seen in (None, _reply("r")) for seen in readers_saw)  # never half a file
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".evict")]
    assert [p.name for p in files] == [f"{key}.json"]


def test_eviction_drops_the_least_recently_used(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path, max_bytes=10_000_000)
    keys = [call_key("p", _request(f"q{i}")) for i in range(20)]
    for i, key in enumerate(keys):
        cache.put(key, _reply("x" * 400))
        past = time.time() - 1000 + i  # written in this order
        os.utime(cache._path(key), (past, past))
    cache.get(keys[0])  # used just now: kept
    size = cache._path(keys[0]).stat().st_size
    cache.max_bytes = size * 10
    assert cache.evict() == 11  # down to 90%: 9 files
    kept = [k for k in keys if cache._path(k).exists()]
    assert len(kept) == 9 and keys[0] in kept
    assert kept[1:] == keys[-8:]  # the newest stayed
    assert cache.evict() == 0  # under the limit now


def test_eviction_runs_by_itself_as_writes_add_up(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path, max_bytes=20_000)
    for i in range(200):
        cache.put(call_key("p", _request(f"q{i}")), _reply("y" * 300))
    deadline = time.monotonic() + 10
    while cache._evicting.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    cache.evict()
    total = sum(p.stat().st_size for p in tmp_path.rglob("*.json"))
    assert total <= 20_000


def test_an_unreadable_file_is_a_miss(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    key = call_key("p", _request("broken"))
    cache._path(key).parent.mkdir(parents=True)
    cache._path(key).write_text("{not json", encoding="utf-8")
    assert cache.get(key) is None


def test_a_bad_limit_or_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_bytes"):
        ResponseCache(tmp_path, max_bytes=0)
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot use cache directory"):
        ResponseCache(blocker / "cache")
