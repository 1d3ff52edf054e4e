"""A small MCP server for the examples: kitchen notes to search, add to and delete.

Written with the MCP SDK's ``MCPServer``. fanout starts it over stdio (see
``examples/mcp/fanout.toml``); ``python examples/mcp/notes_server.py --http 8765``
serves it over streamable HTTP at ``http://127.0.0.1:8765/mcp`` instead. The notes
live in memory (each process starts with the same three).
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

app = MCPServer("notes", log_level="WARNING")

_NOTES = {
    "tea": "Green tea steeps at 80C for two minutes; black tea at 95C for four.",
    "kettle": "The kettle holds 1.7 litres and boils in about three minutes.",
    "bread": "A loaf needs 500 g flour, 7 g yeast, 10 g salt and 300 ml water.",
}


@app.tool()
def search_notes(query: str) -> list[str]:
    """Search the kitchen notes: those that share a word with the query."""
    words = {w.strip("?.,!").lower() for w in query.split()} - {""}
    found = [
        note
        for topic, note in _NOTES.items()
        if words & ({topic} | {w.strip(".,;").lower() for w in note.split()})
    ]
    return found or [f"no note matches {query!r}; topics: {', '.join(_NOTES)}"]


@app.tool()
def add_note(topic: str, text: str) -> str:
    """Add (or replace) the note on a topic."""
    _NOTES[topic.lower()] = text
    return f"noted {topic}"


@app.tool()
def delete_note(topic: str) -> str:
    """Delete the note on a topic."""
    if _NOTES.pop(topic.lower(), None) is None:
        raise ValueError(f"there is no note on {topic!r}")
    return f"deleted {topic}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run()
