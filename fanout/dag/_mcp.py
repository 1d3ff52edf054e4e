"""``mcp("name")``: an MCP server as a tool source of an llm node (a pure marker).

The DAG only names the server and says which of its tools the model may see and
which need a person's approval; how to reach the server (``[mcp.NAME]`` in the
config) and its tools (listed when a run first needs them) belong to the run layer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fanout.errors import ConfigError

__all__ = ["McpTools", "mcp"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True, slots=True)
class McpTools:
    """The tools of MCP server ``server`` (``[mcp.SERVER]`` in the config) offered to a model.

    ``include``: only these tools (``None``: all the server lists); ``exclude``: not
    these; ``approval``: tools a person must approve before each call (``True``: all).
    """

    server: str
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    approval: tuple[str, ...] | bool = ()

    def selects(self, tool: str) -> bool:
        """Whether the model is offered the server's tool ``tool``."""
        if self.include is not None and tool not in self.include:
            return False
        return tool not in self.exclude

    def needs_approval(self, tool: str) -> bool:
        return self.approval is True or (isinstance(self.approval, tuple) and tool in self.approval)

    @property
    def named(self) -> frozenset[str]:
        """Every tool name this marker names (each must exist on the server)."""
        names = set(self.include or ()) | set(self.exclude)
        if isinstance(self.approval, tuple):
            names |= set(self.approval)
        return frozenset(names)

    def __repr__(self) -> str:
        return f"mcp({self.server!r})"


def mcp(
    server: str,
    *,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    approval: Iterable[str] | bool = (),
) -> McpTools:
    """The tools of the MCP server configured as ``[mcp.SERVER]``, for ``dag.llm(tools=[...])``.

    ``include`` / ``exclude`` filter the tools the model sees; ``approval`` names tools
    (or ``True``: every tool) that pause the run for a person's approval before each
    call (``fanout review approve ID``). A name the server does not have is a
    :class:`ConfigError` when the run starts, naming the tools it has.
    """
    where = f"mcp({server!r})"
    if not isinstance(server, str) or not _NAME.match(server):
        raise ConfigError(
            f"{where}: a server name is letters, digits, '_' and '-' (the key of its "
            "[mcp.NAME] config section)"
        )
    inc = None if include is None else _names(include, where, "include")
    exc = _names(exclude, where, "exclude")
    if inc is not None and set(inc) & set(exc):
        raise ConfigError(f"{where}: {sorted(set(inc) & set(exc))} both included and excluded")
    appr: tuple[str, ...] | bool
    appr = approval if isinstance(approval, bool) else _names(approval, where, "approval")
    if isinstance(appr, tuple):
        hidden = [t for t in appr if (inc is not None and t not in inc) or t in exc]
        if hidden:
            raise ConfigError(
                f"{where}: approval names {hidden}, which the filter hides from the model"
            )
    return McpTools(server, inc, exc, appr)


def _names(values: Iterable[str], where: str, what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ConfigError(f"{where}: {what} takes a list of tool names, not one string")
    names = tuple(values)
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{where}: {what} must list tool names (strings)")
    return names
