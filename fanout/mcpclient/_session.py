"""``McpSession``: one live connection to an MCP server, owned by a task of its own.

The SDK's client is a nest of anyio task groups that must be entered and left by
the same task, while a session here is shared by every call of a process (or of a
run): so one owner task enters it, tells the starter it is ready, and holds it until
:meth:`McpSession.aclose`. Calls from any task go through it concurrently (the
protocol matches replies to requests by id). A session whose connection died says so
(``alive``); the caller (``fanout.run``) starts a new one and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from typing import IO, Any

from fanout._extras import require
from fanout.config import McpServerConfig
from fanout.errors import McpConnectionError, McpTimeout
from fanout.mcpclient._reply import McpReply, McpToolInfo, reply_of
from fanout.mcpclient._secrets import expand_env

__all__ = ["McpSession"]

_MAX_PAGES = 100  # a server whose tool listing never ends cannot hang a start


class McpSession:
    """A session with the server ``name`` configured by ``config``.

    :meth:`start` connects (spawns a stdio server, or opens the HTTP session) and
    does the handshake within ``connect_timeout_s``; :meth:`list_tools` and
    :meth:`call` are safe to await from many tasks at once.
    """

    def __init__(self, name: str, config: McpServerConfig) -> None:
        self.name = name
        self.config = config
        self.alive = False
        self._client: Any = None
        self._owner: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._closing = asyncio.Event()
        self._errlog: IO[str] | None = None

    async def start(self) -> None:
        """Connect; raises :class:`McpConnectionError` (a server that cannot start or be
        reached, naming it) or :class:`ConfigError` (an unset ``${VAR}``)."""
        require(f"MCP server {self.name!r}", "mcp", extra="mcp")
        transport = self._transport()  # an unset ${VAR} raises ConfigError here
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._owner = loop.create_task(self._own(transport), name=f"mcp session {self.name}")
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                await asyncio.shield(self._ready)
        except TimeoutError:
            self._ready.cancel()  # nobody will read the owner's late verdict
            await self.aclose()
            raise McpConnectionError(
                f"MCP server {self.name!r} did not finish its handshake within "
                f"connect_timeout_s={self.config.connect_timeout_s}{self._stderr_tail()}",
                server=self.name,
            ) from None
        except McpConnectionError:
            await self.aclose()
            raise
        self.alive = True

    async def _own(self, transport: Any) -> None:
        from mcp import Client

        ready = self._ready
        assert ready is not None
        try:
            async with Client(transport, read_timeout_seconds=self.config.timeout_s) as client:
                self._client = client
                ready.set_result(None)
                await self._closing.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(
                    McpConnectionError(
                        f"MCP server {self.name!r} could not be {self._verb()}: "
                        f"{_describe(exc)}{self._stderr_tail()}",
                        server=self.name,
                    )
                )
            elif not isinstance(exc, asyncio.CancelledError | Exception):
                raise
        finally:
            self.alive = False
            self._client = None

    def _verb(self) -> str:
        command = self.config.command
        # the command's name, not its args (they may carry a token)
        return f"started ({command!r})" if command is not None else "reached"

    def _transport(self) -> Any:
        cfg = self.config
        where = f"[mcp.{self.name}]"
        if cfg.command is not None:
            from mcp import StdioServerParameters
            from mcp.client.stdio import stdio_client

            env = expand_env(cfg.env, where=f"{where} env") if cfg.env else None
            params = StdioServerParameters(
                command=cfg.command, args=list(cfg.args), env=env, cwd=cfg.cwd
            )
            # The server's stderr (its logs, a start-up traceback) goes to a file of this
            # session, not the terminal: a failed start quotes its last line.
            self._errlog = tempfile.TemporaryFile(  # noqa: SIM115  # closed by aclose()
                "w+", encoding="utf-8", errors="replace"
            )
            return stdio_client(params, errlog=self._errlog)
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        assert cfg.url is not None
        headers = expand_env(cfg.headers, where=f"{where} headers")
        http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(cfg.connect_timeout_s, read=max(cfg.timeout_s, 300.0)),
        )
        return _with_client(http, streamable_http_client(cfg.url, http_client=http))

    async def list_tools(self) -> list[McpToolInfo]:
        """Every tool the server lists (all pages), within ``connect_timeout_s``."""
        client = self._live()
        tools: list[McpToolInfo] = []
        cursor: str | None = None
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                for _ in range(_MAX_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(
                        McpToolInfo(t.name, t.description or "", dict(t.input_schema))
                        for t in page.tools
                    )
                    cursor = page.next_cursor
                    if cursor is None:
                        break
        except TimeoutError:
            raise McpTimeout(
                f"MCP server {self.name!r} did not list its tools within "
                f"connect_timeout_s={self.config.connect_timeout_s}",
                server=self.name,
            ) from None
        except Exception as exc:
            raise self._lost(exc) from None
        return tools

    async def call(self, tool: str, arguments: dict[str, object], timeout_s: float) -> McpReply:
        """Call ``tool``; its own failure is a reply with ``is_error`` (for the model).

        Raises :class:`McpTimeout` (no answer within ``timeout_s``) and
        :class:`McpConnectionError` (the session died: ``alive`` is then false).
        """
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT
        from pydantic import ValidationError

        client = self._live()
        try:
            async with asyncio.timeout(timeout_s):
                result = await client.call_tool(tool, arguments, read_timeout_seconds=timeout_s)
        except TimeoutError:
            raise self._timeout(tool, timeout_s) from None
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise self._timeout(tool, timeout_s) from None
            if exc.code == CONNECTION_CLOSED:
                raise self._lost(exc) from None
            return McpReply(f"MCP error {exc.code}: {exc.message}", is_error=True)
        except ValidationError as exc:  # the server answered, but not in MCP's shape
            return McpReply(f"the server's reply is not a valid MCP result: {exc}", True)
        except Exception as exc:  # the transport failed (a dead process, a refused socket)
            raise self._lost(exc) from None
        return reply_of(result)

    def _live(self) -> Any:
        client = self._client
        if client is None or not self.alive:
            raise McpConnectionError(
                f"MCP server {self.name!r}: the session is closed", server=self.name
            )
        return client

    def _lost(self, exc: BaseException) -> McpConnectionError:
        self.alive = False
        return McpConnectionError(
            f"MCP server {self.name!r}: connection lost ({_describe(exc)})", server=self.name
        )

    def _timeout(self, tool: str, timeout_s: float) -> McpTimeout:
        return McpTimeout(
            f"MCP server {self.name!r}: tool {tool!r} did not answer within timeout_s={timeout_s}",
            server=self.name,
        )

    def _stderr_tail(self) -> str:
        log = self._errlog
        if log is None:
            return ""
        try:
            log.flush()
            log.seek(0)
            lines = [line.strip() for line in log.read()[-4000:].splitlines() if line.strip()]
        except (OSError, ValueError):
            return ""
        return f"; its stderr ends: {lines[-1][:300]}" if lines else ""

    async def aclose(self) -> None:
        """Close the session (a stdio server is told to exit, then stopped)."""
        self.alive = False
        self._closing.set()
        owner = self._owner
        if owner is not None and not owner.done():
            try:
                async with asyncio.timeout(self.config.connect_timeout_s):
                    await asyncio.shield(owner)
            except (TimeoutError, Exception):
                owner.cancel()
                with contextlib.suppress(BaseException):
                    await owner
        if self._errlog is not None:
            self._errlog.close()
            self._errlog = None

    def __repr__(self) -> str:  # never the env or headers: they may hold secrets
        kind = "stdio" if self.config.command is not None else "http"
        return f"McpSession({self.name!r}, {kind}, alive={self.alive})"


@contextlib.asynccontextmanager
async def _with_client(http: Any, transport: Any) -> Any:
    """The HTTP transport, closing its httpx client after it."""
    async with http, transport as streams:
        yield streams


def _describe(exc: BaseException) -> str:
    """The innermost real error of an exception (group): what a person can act on."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError | PermissionError):
        text = f"{type(exc).__name__}: {text}"
    return text[:500]
