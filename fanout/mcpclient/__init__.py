"""The MCP client: sessions with MCP servers over stdio or streamable HTTP (the ``mcp`` SDK).

The only importer of the ``mcp`` SDK, and only once a session starts: the core
install and ``import fanout`` never load it (``pip install 'fanout[mcp]'`` brings it).
"""

from fanout.mcpclient._reply import McpReply, McpToolInfo
from fanout.mcpclient._secrets import expand_env
from fanout.mcpclient._session import McpSession

__all__ = ["McpReply", "McpSession", "McpToolInfo", "expand_env"]
