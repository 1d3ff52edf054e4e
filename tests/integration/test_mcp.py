"""MCP servers as tool sources: a local MCPServer over stdio and streamable HTTP, an agent
over 500 records under the server's concurrency cap, a killed server restarted with
nothing lost, and bad servers that fail clearly."""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import nullcontext
from pathlib import Path

import pytest
from support import free_port
from support_mcp import (
    agent,
    effects,
    http_server,
    kv_config,
    lookup_prompt,
    peak,
    stdio_server,
    tool_rows,
)

from fanout import ConfigError, Engine, RunResult

CAP = 4
RECORDS = 500


async def run_records(engine: Engine, keys: list[str], in_flight: int = 64) -> list[RunResult]:
    """Each key a run of the agent, ``in_flight`` at a time (as a batch job runs records)."""
    dag = agent()
    gate = asyncio.Semaphore(in_flight)

    async def one(key: str) -> RunResult:
        async with gate:
            return await engine.run(dag, {"task": lookup_prompt(key)}, record_key=key)

    return await asyncio.gather(*(one(k) for k in keys))


# A loopback socket left unclosed by an earlier test (its source not yet found: the
# suite's other tests pass a gc.collect() after them) was garbage-collected during this
# long test in one CI run; the warning names no code of this test.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_an_agent_over_500_records_calls_tools_in_parallel_under_the_cap(
    tmp_path: Path, transport: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    keys = [f"k{i}" for i in range(RECORDS)]
    traces = tmp_path / "traces"
    with http_server(state) if transport == "http" else nullcontext("") as url:
        server = (
            stdio_server(state, max_concurrency=CAP)
            if transport == "stdio"
            else {"url": url, "max_concurrency": CAP, "headers": {"X-Client": "fanout-test"}}
        )
        async with Engine(kv_config(server), traces=traces) as engine:
            results = await run_records(engine, keys)

    assert all(r.ok for r in results), [r.error_message for r in results if not r.ok][:3]
    for key, result in zip(keys, results, strict=True):
        assert f"value-of-{key}" in str(result.outputs["answer"])
        assert result.nodes["agent"].tool_calls == 1
    assert sorted(effects(state)) == sorted(f"lookup {k}" for k in keys)
    # The server's own count: the cap was reached and never passed.
    assert peak(state) == CAP
    rows = tool_rows(traces)
    assert len(rows) == RECORDS
    assert {r["record_key"] for r in rows} == set(keys)
    assert {(r["span_name"], r["provider"], r["status"]) for r in rows} == {
        ("execute_tool lookup", "mcp:kv", "ok")
    }
    assert all(r["input_hmac"] and r["input_text"] is None for r in rows)  # HMAC by default


async def test_a_killed_stdio_server_is_restarted_and_nothing_is_lost(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    keys = [f"k{i}" for i in range(RECORDS)]
    # 8 calls in flight die together: one failure for the circuit (threshold 5), not 8
    server = stdio_server(state, delay_ms=10, max_concurrency=8)
    server["retry"] = {"max_attempts": 5, "initial_backoff_s": 0.05}
    traces = tmp_path / "traces"
    killed: list[int] = []

    async def kill_mid_job() -> None:
        # the effects log is written by another process: polled, nothing to wait on here
        while len(effects(state)) < RECORDS // 4:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        pid = int((state / "pid").read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    async with Engine(kv_config(server), traces=traces) as engine:
        killer = asyncio.ensure_future(kill_mid_job())
        results = await run_records(engine, keys)
        await killer

    assert killed and int((state / "pid").read_text()) != killed[0]  # a new process
    assert all(r.ok for r in results), [r.error_message for r in results if not r.ok][:3]
    for key, result in zip(keys, results, strict=True):
        assert f"value-of-{key}" in str(result.outputs["answer"])
    # Every call's effect is there; the calls cut by the kill were retried (a call the
    # server finished just before dying may count twice: at-least-once).
    done = effects(state)
    assert set(done) == {f"lookup {k}" for k in keys}
    rows = tool_rows(traces)
    lost = [r for r in rows if r["status"] == "error"]
    assert lost and all(r["error_type"] == "McpConnectionError" for r in lost)
    assert {r["record_key"] for r in rows if r["status"] == "ok"} == set(keys)
    assert all(
        r["attempt"] >= 2
        for r in rows
        if r["status"] == "ok" and r["record_key"] in {x["record_key"] for x in lost}
    )


async def test_bad_servers_are_config_errors_before_any_model_call(tmp_path: Path) -> None:
    state = tmp_path / "state"
    bad_command = {"command": str(tmp_path / "no-such-server")}
    async with Engine(kv_config(bad_command)) as engine:
        with pytest.raises(ConfigError, match=r"MCP server 'kv' could not be started.*no-such"):
            await engine.run(agent(), {"task": "hi"})

    crashing = {"command": "python3", "args": ["-c", "import sys; sys.exit('kv: bad db url')"]}
    async with Engine(kv_config(crashing)) as engine:
        with pytest.raises(ConfigError, match=r"'kv'.*its stderr ends: kv: bad db url"):
            await engine.run(agent(), {"task": "hi"})

    silent = {"command": "python3", "args": ["-c", "import time; time.sleep(60)"]}
    async with Engine(kv_config({**silent, "connect_timeout_s": 1})) as engine:
        with pytest.raises(ConfigError, match=r"'kv' did not finish its handshake within conn"):
            await engine.run(agent(), {"task": "hi"})

    async with Engine(kv_config(stdio_server(state))) as engine:
        with pytest.raises(ConfigError, match=r"has no tool \['nope'\]; it has \['broken', "):
            await engine.run(agent(include=["lookup", "nope"]), {"task": "hi"})
    unconfigured = kv_config(stdio_server(state)).model_copy(update={"mcp": {}})
    async with Engine(unconfigured) as engine:
        with pytest.raises(ConfigError, match=r"no \[mcp\.kv\] \(configured: none\)"):
            await engine.run(agent(), {"task": "hi"})

    async with Engine(kv_config({"url": "http://127.0.0.1:9/mcp", "connect_timeout_s": 5})) as e:
        with pytest.raises(ConfigError, match=r"MCP server 'kv' could not be reached"):
            await e.run(agent(), {"task": "hi"})


async def test_tool_errors_bad_arguments_and_a_hanging_server_go_back_to_the_model(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    # long enough that a loaded machine never times out a tool that does answer (then
    # retried, it would count twice below), short enough for the hanging one
    server = stdio_server(state, timeout_s=2.0)
    server["retry"] = {"max_attempts": 2, "initial_backoff_s": 0.01}
    script = (
        '[sim:tools=broken({"x": 1});lookup({"key": 5});lookup({"kee": "a"});hang({"seconds": 30})]'
    )
    traces = tmp_path / "traces"
    async with Engine(kv_config(server), traces=traces) as engine:
        result = await engine.run(agent(), {"task": script})

    assert result.ok, result.error_message
    transcript = result.nodes["agent"].transcript
    assert transcript is not None
    answers = [str(m["content"]) for m in transcript if m["role"] == "tool"]
    assert answers[0].startswith("error: Error executing tool broken")
    assert answers[1].startswith("error: invalid arguments for lookup (MCP server 'kv'): key:")
    assert "'key' is a required property" in answers[2]
    assert answers[3] == ("error: MCP server 'kv': tool 'hang' did not answer within timeout_s=2.0")
    assert result.nodes["agent"].tool_errors == 4
    assert effects(state) == []  # bad arguments never reached the server
    rows = tool_rows(traces)
    by_tool: dict[str, list[int]] = {}
    for row in rows:
        by_tool.setdefault(str(row["tool_name"]), []).append(int(row["attempt"]))  # type: ignore[call-overload]
    assert sorted(by_tool["broken"]) == [1]  # a tool's own error is never retried
    assert sorted(by_tool["hang"]) == [1, 2]  # a timeout is
    assert all(r["status"] == "error" for r in rows)


async def test_secrets_come_from_the_environment_and_never_reach_the_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    server = stdio_server(state, env={"KV_TOKEN": "${FANOUT_TEST_KV_TOKEN}"})
    config = kv_config(server, traces={"content": "full"})
    monkeypatch.delenv("FANOUT_TEST_KV_TOKEN", raising=False)
    async with Engine(config) as engine:
        with pytest.raises(ConfigError, match="FANOUT_TEST_KV_TOKEN, which is not set"):
            await engine.run(agent(), {"task": "hi"})

    monkeypatch.setenv("FANOUT_TEST_KV_TOKEN", "s3cret-value")
    traces = tmp_path / "traces"
    async with Engine(config, traces=traces) as engine:
        result = await engine.run(agent(), {"task": "[sim:tools=secret_ok({})] check"})
        assert "s3cret" not in repr(engine._get_hub()._servers["kv"].sessions)
    assert result.ok and "true" in str(result.outputs["answer"])
    assert "s3cret" not in repr(config)
    assert not any("s3cret" in str(v) for row in tool_rows(traces) for v in row.values())


async def test_one_shared_session_per_process_or_one_per_run_when_stateful(
    tmp_path: Path,
) -> None:
    for stateful, started in ((False, 1), (True, 1 + 3)):  # + the session that lists tools
        state = tmp_path / f"stateful-{stateful}"
        state.mkdir()
        async with Engine(kv_config(stdio_server(state, stateful=stateful))) as engine:
            for key in ("a", "b", "c"):
                result = await engine.run(agent(), {"task": lookup_prompt(key)})
                assert result.ok, result.error_message
            sessions = engine._get_hub().describe()["kv"]
        assert len(list(state.glob("started.*"))) == started
        assert sessions == {"sessions": int(not stateful), "circuit": "closed", "tools": [
            "lookup", "delete", "broken", "hang", "secret_ok",
        ]}  # fmt: skip


async def test_a_server_that_went_away_opens_its_circuit(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with http_server(state) as url:
        server = {
            "url": url, "connect_timeout_s": 5, "retry": {"max_attempts": 1},
            "circuit": {"failure_threshold": 2, "cooldown_s": 600},
        }  # fmt: skip
        engine = Engine(kv_config(server))
        first = await engine.run(agent(), {"task": lookup_prompt("a")})
    try:
        later = [await engine.run(agent(), {"task": lookup_prompt(k)}) for k in "bcde"]
    finally:
        await engine.aclose()
    assert "value-of-a" in str(first.outputs["answer"])
    answers = [
        next(str(m["content"]) for m in r.nodes["agent"].transcript or [] if m["role"] == "tool")
        for r in later
    ]
    assert all(r.ok for r in later)  # the model heard the error and answered
    assert all("MCP server 'kv'" in a for a in answers[:2]) and "circuit" not in answers[1]
    assert all("circuit open after repeated failures" in a for a in answers[2:])


async def test_requests_per_min_paces_a_servers_calls(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    traces = tmp_path / "traces"
    server = stdio_server(state, delay_ms=0, requests_per_min=240)  # 4/s, a 1 s burst
    async with Engine(kv_config(server), traces=traces) as engine:
        results = await run_records(engine, [f"k{i}" for i in range(10)])
    assert all(r.ok for r in results)
    waits = [float(r["limiter_wait_ms"]) for r in tool_rows(traces)]  # type: ignore[arg-type]
    assert len(waits) == 10
    assert sum(w > 0 for w in waits) >= 5  # past the burst, calls waited for the pace


async def test_retry_on_without_timeout_never_sends_a_timed_out_call_again(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    server = stdio_server(state, timeout_s=0.3)
    server["retry"] = {"max_attempts": 3, "retry_on": ["connection"]}
    traces = tmp_path / "traces"
    async with Engine(kv_config(server), traces=traces) as engine:
        result = await engine.run(agent(), {"task": '[sim:tools=hang({"seconds": 30})] wait'})
    assert result.ok
    assert [(r["tool_name"], r["attempt"]) for r in tool_rows(traces)] == [("hang", 1)]


async def test_an_http_server_restarted_between_calls_gets_a_new_session(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    server = {"url": f"http://127.0.0.1:{port}/mcp", "retry": {"initial_backoff_s": 0.05}}
    async with Engine(kv_config(server)) as engine:
        with http_server(state, port=port):
            before = await run_records(engine, ["a", "b"])
        with http_server(state, port=port):  # a new process: it knows no old session
            after = await run_records(engine, ["c", "d"])
    assert all(r.ok for r in before + after)
    for key, result in zip("abcd", before + after, strict=True):
        assert f"value-of-{key}" in str(result.outputs["answer"])
