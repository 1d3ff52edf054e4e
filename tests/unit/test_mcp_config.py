"""``[mcp.NAME]`` config: one transport, secrets only through ``${VAR}``, and the core
install never loading the MCP SDK."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fanout import ConfigError, parse_config
from fanout.mcpclient import expand_env


def mcp_section(**server: object) -> dict[str, object]:
    return {"mcp": {"notes": server}}


def test_a_server_is_stdio_or_http_and_its_keys_fit() -> None:
    stdio = parse_config(mcp_section(command="python", args=["notes.py"], env={"LEVEL": "1"}))
    assert stdio.mcp["notes"].max_concurrency == 8 and not stdio.mcp["notes"].stateful
    http = parse_config(mcp_section(url="http://127.0.0.1:8000/mcp", max_concurrency=2))
    assert http.mcp["notes"].url == "http://127.0.0.1:8000/mcp"
    cases = [
        ({}, "set either command"),
        ({"command": "x", "url": "http://h/mcp"}, "set either command"),
        ({"url": "http://h/mcp", "args": ["a"]}, "args, env and cwd are for stdio"),
        ({"command": "x", "headers": {"X": "1"}}, "headers are for HTTP servers"),
        ({"command": "x", "max_concurrency": 0}, "mcp.notes.max_concurrency"),
        ({"command": "x", "colour": "red"}, "mcp.notes.colour: unknown key"),
    ]
    for server, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_config(mcp_section(**server))


def test_secrets_in_the_file_are_refused_and_never_echoed() -> None:
    for key, value in (("Authorization", "Bearer abc123"), ("X-Api-Key", "abc123")):
        with pytest.raises(ConfigError, match=rf"headers\.{key} looks like a secret") as caught:
            parse_config(mcp_section(url="http://h/mcp", headers={key: value}))
        assert "abc123" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"env\.NOTES_TOKEN looks like a secret"):
        parse_config(mcp_section(command="x", env={"NOTES_TOKEN": "abc123"}))
    ok = parse_config(mcp_section(url="http://h/mcp", headers={"Authorization": "Bearer ${T}"}))
    assert ok.mcp["notes"].headers == {"Authorization": "Bearer ${T}"}


def test_variables_are_read_when_the_server_is_reached() -> None:
    values = {"Authorization": "Bearer ${TOKEN}", "X-Team": "${TEAM}-eu", "Plain": "x"}
    env = {"TOKEN": "t0k", "TEAM": "ops"}
    assert expand_env(values, where="[mcp.notes] headers", environ=env) == {
        "Authorization": "Bearer t0k", "X-Team": "ops-eu", "Plain": "x",
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"Authorization reads .* TOKEN, which is not set"):
        expand_env(values, where="[mcp.notes] headers", environ={"TEAM": "ops"})


def test_import_fanout_does_not_load_the_mcp_sdk() -> None:
    code = (
        "import sys, fanout, fanout.run, fanout.mcpclient\n"
        "from fanout import DAG, mcp\n"
        "DAG('d').llm('fast', 'x', tools=[mcp('notes')])\n"
        "print(sorted(m for m in ('mcp', 'jsonschema', 'httpx2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_jobs_fingerprint_names_its_mcp_tools() -> None:
    from fanout import DAG, mcp
    from fanout.batch._manifest import fingerprint

    def nodes(*sources: object) -> object:
        dag = DAG("d")
        dag.input("task")
        dag.output(a=dag.llm("fast", "{task}", tools=list(sources), name="a"))  # type: ignore[arg-type]
        config = parse_config(
            {
                "providers": {"s": {"kind": "sim"}},
                "models": {"fast": {"provider": "s", "model": "m"}},
            }
        )
        return fingerprint(dag.validate(), config, None)["nodes"]

    assert nodes(mcp("kv")) == nodes(mcp("kv"))
    assert nodes(mcp("kv")) != nodes(mcp("kv", include=["lookup"]))
    assert nodes(mcp("kv")) != nodes(mcp("kv", approval=True))
