"""``McpHub``: the MCP servers of one engine as scheduled resources, and their tools.

Each ``[mcp.NAME]`` server gets a limiter (its ``max_concurrency`` and optional
``requests_per_min``), a circuit breaker, retries by error class (a lost connection
or a timeout is retried after a back-off, on a new session if the old one died; a
tool's own error goes back to the model and is never retried) and one shared session
per process (a ``stateful`` server: one per run, closed when the run ends). Tools are
listed once per server (on the first run that needs them, before any provider call)
and become :class:`McpTool` schemas; every attempt of a call is a tool trace row.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fanout.clock import Clock
from fanout.config import McpServerConfig
from fanout.dag import LLMNode, McpTools, Plan
from fanout.errors import ConfigError, McpConnectionError, McpServerError, McpTimeout, ToolError
from fanout.limits import Limiter
from fanout.mcpclient import McpReply, McpSession, McpToolInfo
from fanout.retry import CircuitBreaker
from fanout.run._tracing import CallSite
from fanout.types import ToolCall, ToolSpec

if TYPE_CHECKING:
    from fanout.run._context import RunContext

__all__ = ["McpHub", "McpTool", "check_sources", "plan_sources"]

_SHARED = ""  # the session key of a server's process-wide session


@dataclass(frozen=True, slots=True)
class McpTool:
    """One tool of an MCP server, as the model is offered it."""

    spec: ToolSpec
    server: str
    approval: bool
    validator: Any  # a jsonschema validator of its input schema

    @property
    def name(self) -> str:
        return self.spec.name


class _Server:
    """One server's limiter, circuit, tool listing and sessions (on one event loop)."""

    def __init__(self, name: str, config: McpServerConfig, clock: Clock) -> None:
        self.name = name
        self.config = config
        self.limiter = Limiter(
            clock=clock,
            name=f"mcp/{name}",
            requests_per_min=config.requests_per_min,
            max_concurrency=config.max_concurrency,
            adaptive=False,
        )
        self.circuit = CircuitBreaker(
            clock,
            failure_threshold=config.circuit.failure_threshold,
            cooldown_s=config.circuit.cooldown_s,
        )
        self.listing: list[McpToolInfo] | None = None
        self.sessions: dict[str, McpSession] = {}
        self.lock = asyncio.Lock()  # one start at a time: a dead session is replaced once
        self.failed: weakref.WeakSet[McpSession] = weakref.WeakSet()  # deaths counted


def plan_sources(plan: Plan) -> list[LLMNode]:
    """The llm nodes of ``plan`` (map bodies too) that call MCP tools."""
    nodes = [getattr(n, "body", n) for n in plan.nodes.values()]
    return [n for n in nodes if isinstance(n, LLMNode) and n.mcp]


def check_sources(plan: Plan, config: Mapping[str, McpServerConfig]) -> bool:
    """Whether ``plan`` calls MCP tools; what can be known without reaching a server is
    checked here (before a batch job writes anything): the extra is installed, and
    every server it names is configured."""
    nodes = plan_sources(plan)
    if not nodes:
        return False
    from fanout._extras import require

    require("tools=[mcp(...)]", "mcp", "jsonschema", extra="mcp")
    for node in nodes:
        for source in node.mcp:
            if source.server not in config:
                known = ", ".join(sorted(config)) or "none"
                raise ConfigError(
                    f"DAG node {node.id!r}: tools=[mcp({source.server!r})] but the config has "
                    f"no [mcp.{source.server}] (configured: {known}); add it with "
                    "command = ... or url = ..."
                )
    return True


class McpHub:
    """The engine's MCP servers on one event loop (see the module's docstring)."""

    def __init__(self, config: Mapping[str, McpServerConfig], clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._servers: dict[str, _Server] = {}
        # by (the node's MCP sources, its Python tools' names): listed and checked once
        self._resolved: dict[tuple[tuple[McpTools, ...], tuple[str, ...]], tuple[McpTool, ...]] = {}
        self._rng = random.Random()

    # -- tools -----------------------------------------------------------------------

    async def prepare(self, plan: Plan) -> None:
        """List the tools of every MCP server ``plan`` uses (once): a server that does not
        start, or a filter naming a tool it lacks, is a :class:`ConfigError` here."""
        for node in plan_sources(plan):
            await self.tools(node)

    async def tools(self, node: LLMNode) -> tuple[McpTool, ...]:
        """The MCP tools ``node`` offers its model (listed once, then cached)."""
        key = (node.mcp, tuple(t.name for t in node.tools))
        found = self._resolved.get(key)
        if found is not None:
            return found
        where = f"DAG node {node.id!r}"
        tools: list[McpTool] = []
        for source in node.mcp:
            tools.extend(await self._resolve(source, where))
        names = [t.name for t in tools] + [t.name for t in node.tools]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ConfigError(
                f"{where}: tools {clash} are offered twice (by two MCP servers, or a server "
                "and a Python tool); exclude one with mcp(NAME, exclude=[...])"
            )
        self._resolved[key] = resolved = tuple(tools)
        return resolved

    async def _resolve(self, source: McpTools, where: str) -> list[McpTool]:
        server = self._server(source.server, where)
        listing = await self._listing(server)
        have = {t.name for t in listing}
        missing = sorted(source.named - have)
        if missing:
            raise ConfigError(
                f"{where}: MCP server {server.name!r} has no tool {missing}; it has {sorted(have)}"
            )
        from jsonschema import validators

        tools = []
        for info in listing:
            if not source.selects(info.name):
                continue
            schema = info.input_schema or {"type": "object"}
            checker = validators.validator_for(schema)
            spec = ToolSpec(info.name, info.description, schema)
            tools.append(
                McpTool(spec, server.name, source.needs_approval(info.name), checker(schema))
            )
        return tools

    def _server(self, name: str, where: str) -> _Server:
        server = self._servers.get(name)
        if server is None:
            config = self._config.get(name)
            if config is None:  # check_sources said so before the run; a guard here
                raise ConfigError(f"{where}: the config has no [mcp.{name}]")
            server = self._servers[name] = _Server(name, config, self._clock)
        return server

    async def _listing(self, server: _Server) -> list[McpToolInfo]:
        if server.listing is None:
            try:
                session = await self._session(server, _SHARED)
                server.listing = await session.list_tools()
                if server.config.stateful:  # its calls get sessions of their own
                    await server.sessions.pop(_SHARED).aclose()
            except McpServerError as exc:
                raise ConfigError(f"{exc}; check [mcp.{server.name}] in the config") from None
        return server.listing

    async def _session(self, server: _Server, key: str) -> McpSession:
        session = server.sessions.get(key)
        if session is not None and session.alive:
            return session
        async with server.lock:
            session = server.sessions.get(key)
            if session is not None and session.alive:
                return session  # another call replaced it while this one waited
            if session is not None:
                await session.aclose()
            session = McpSession(server.name, server.config)
            await session.start()
            server.sessions[key] = session
            return session

    # -- calls -----------------------------------------------------------------------

    async def call(
        self, tool: McpTool, call: ToolCall, ctx: RunContext, site: CallSite | None
    ) -> str:
        """Run the model's call of ``tool``: its result as text for the model (a failure
        starts with ``error: ``), each attempt a trace row."""
        server = self._servers[tool.server]
        try:
            arguments = call.parsed_arguments()
        except ValueError as exc:
            return self._refused(tool, call, ctx, site, f"invalid arguments for {tool.name}: {exc}")
        problems = sorted(tool.validator.iter_errors(arguments), key=lambda e: list(e.path))
        if problems:
            brief = "; ".join(
                f"{'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}" for e in problems[:5]
            )
            return self._refused(
                tool, call, ctx, site,
                f"invalid arguments for {tool.name} (MCP server {server.name!r}): {brief}",
            )  # fmt: skip
        key = ctx.request_id if server.config.stateful else _SHARED
        retry = server.config.retry
        first = self._clock.now()
        backoff_s = 0.0
        for attempt in range(1, retry.max_attempts + 1):
            start = self._clock.now()
            try:
                reply, wait_s = await self._attempt(server, key, tool.name, arguments)
            except McpServerError as exc:
                self._row(tool, call, ctx, site, start, attempt, 0.0, backoff_s, exc, None)
                late = self._clock.now() - first >= retry.max_elapsed_s
                kind = "timeout" if isinstance(exc, McpTimeout) else "connection"
                retryable = exc.retryable and kind in retry.retry_on
                if not retryable or attempt == retry.max_attempts or late:
                    return f"error: {exc}"
                backoff_s = self._rng.uniform(
                    0, min(retry.max_backoff_s, retry.initial_backoff_s * 2 ** (attempt - 1))
                )
                await self._clock.sleep(backoff_s)
                continue
            text = f"error: {reply.text}" if reply.is_error else reply.text
            failed = McpToolFailed(reply.text) if reply.is_error else None
            self._row(tool, call, ctx, site, start, attempt, wait_s, backoff_s, failed, text)
            return text
        raise AssertionError("unreachable: the last attempt returns")

    async def _attempt(
        self, server: _Server, key: str, tool: str, arguments: dict[str, object]
    ) -> tuple[McpReply, float]:
        if not server.circuit.allow():
            raise McpServerError(
                f"MCP server {server.name!r}: circuit open after repeated failures; "
                f"not called for up to {server.circuit.cooldown_s:g} s",
                server=server.name,
            )
        permit = await server.limiter.acquire(0)
        session = None
        try:
            session = await self._session(server, key)
            reply = await session.call(tool, arguments, server.config.timeout_s)
        except McpConnectionError:
            # One dead session fails every call in flight on it: one failure, not many
            # (else a single crash of a busy server would open its circuit).
            if session is None or session not in server.failed:
                server.circuit.record_failure()
                if session is not None:
                    server.failed.add(session)
            raise
        except McpServerError:
            server.circuit.record_failure()
            raise
        except ConfigError as exc:  # an unset ${VAR} on a reconnect
            server.circuit.record_failure()
            raise McpConnectionError(str(exc), server=server.name) from None
        except BaseException:
            server.circuit.abandon()
            raise
        finally:
            permit.release()
        server.circuit.record_success()  # the server answered (its tool may have failed)
        return reply, permit.wait_s

    def _refused(
        self, tool: McpTool, call: ToolCall, ctx: RunContext, site: CallSite | None, why: str
    ) -> str:
        """A call not sent (its arguments do not fit the schema): an error for the model."""
        self._row(tool, call, ctx, site, self._clock.now(), 1, 0.0, 0.0, McpToolFailed(why), None)
        return f"error: {why}"

    def _row(
        self,
        tool: McpTool,
        call: ToolCall,
        ctx: RunContext,
        site: CallSite | None,
        start: float,
        attempt: int,
        wait_s: float,
        backoff_s: float,
        error: BaseException | None,
        output: str | None,
    ) -> None:
        if ctx.tracer is None or site is None:
            return
        ctx.tracer.tool(
            site, dag_name=ctx.dag_name, record_key=ctx.record_key, tool_name=tool.name,
            start=start, end=self._clock.now(), error=error, input_text=call.arguments,
            output_text=output, server=tool.server, attempt=attempt,
            limiter_wait_s=wait_s, backoff_s=backoff_s, call_id=call.id,
        )  # fmt: skip

    # -- lifetime --------------------------------------------------------------------

    async def end_run(self, run_id: str) -> None:
        """Close the sessions a run held with its stateful servers."""
        for server in self._servers.values():
            session = server.sessions.pop(run_id, None) if run_id else None
            if session is not None:
                await session.aclose()

    async def aclose(self) -> None:
        for server in self._servers.values():
            sessions, server.sessions = list(server.sessions.values()), {}
            for session in sessions:
                with contextlib.suppress(Exception):
                    await session.aclose()

    def describe(self) -> dict[str, object]:
        """Each server's state (sessions alive, circuit), for tests and diagnostics."""
        return {
            name: {
                "sessions": sum(s.alive for s in server.sessions.values()),
                "circuit": str(server.circuit.state),
                "tools": [t.name for t in server.listing or ()],
            }
            for name, server in self._servers.items()
        }


class McpToolFailed(ToolError):
    """A tool's own failure (``isError``) or refused arguments, for its trace row only."""
