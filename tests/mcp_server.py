"""A local MCP server for the tests, written with the SDK's MCPServer.

``python mcp_server.py stdio`` or ``python mcp_server.py http PORT``. It counts what
a test asserts on, in the directory ``$MCP_STATE``: ``effects.log`` (one line per
effect of a ``lookup`` or ``delete`` call), ``peak.PID`` (the most calls it ever had
in flight at once), ``pid`` (the running process, for a test that kills it) and
``started.PID`` (one per process started).
``$MCP_DELAY_MS``: how long a ``lookup`` takes. ``secret_ok`` says whether
``$KV_TOKEN`` reached the server (a secret passed through ``${VAR}`` in the config).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer

STATE = Path(os.environ.get("MCP_STATE", "."))
DELAY_S = float(os.environ.get("MCP_DELAY_MS", "10")) / 1000

app = MCPServer("kv", log_level="WARNING")
_in_flight = 0
_peak = 0


def _effect(line: str) -> None:
    with (STATE / "effects.log").open("a", encoding="utf-8") as log:
        log.write(line + "\n")


@app.tool()
async def lookup(key: str) -> str:
    """Look up the value stored under a key."""
    global _in_flight, _peak
    _in_flight += 1
    if _in_flight > _peak:
        _peak = _in_flight
        (STATE / f"peak.{os.getpid()}").write_text(str(_peak))
    try:
        await asyncio.sleep(DELAY_S)
        _effect(f"lookup {key}")
        return f"value-of-{key}"
    finally:
        _in_flight -= 1


@app.tool()
def delete(key: str) -> str:
    """Delete the value stored under a key."""
    _effect(f"delete {key}")
    return f"deleted {key}"


@app.tool()
def broken(x: int) -> str:
    """A tool that always fails."""
    raise ValueError(f"broken cannot handle {x}")


@app.tool()
async def hang(seconds: float) -> str:
    """Answer after a long time."""
    await asyncio.sleep(seconds)
    return "late"


@app.tool()
def secret_ok() -> bool:
    """Whether the secret reached the server."""
    return os.environ.get("KV_TOKEN") == "s3cret-value"


if __name__ == "__main__":
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "pid").write_text(str(os.getpid()))
    (STATE / f"started.{os.getpid()}").touch()
    if sys.argv[1] == "http":
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run()
