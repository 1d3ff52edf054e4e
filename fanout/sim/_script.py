"""Scripted tool calls: the ``[sim:tools=...]`` prompt marker, parsed into turns of calls.

``[sim:tools=search({"q": "x"});lookup({"id": 1})|lookup({"id": 2})]`` means: on
the first model turn call ``search`` and ``lookup`` (two calls at once), on the
second call ``lookup`` again, then answer. ``|`` separates turns, ``;`` the calls
of one turn. The text between a call's parentheses is sent as its arguments
verbatim (empty means ``{}``), so a script can send malformed JSON on purpose; it
must not contain ``)`` directly followed by ``;``, ``|`` or ``]``.
"""

from __future__ import annotations

import re

from fanout.types import Message, ToolCall

__all__ = ["ScriptError", "scripted_calls", "tool_script"]

_START = "[sim:tools="
_CALL = re.compile(r"\s*([A-Za-z_][\w.-]*)\((.*?)\)\s*([;|\]])", re.DOTALL)

ToolScript = tuple[tuple[tuple[str, str], ...], ...]
"""Turns of ``(tool name, arguments text)`` calls."""


class ScriptError(ValueError):
    """A ``[sim:tools=...]`` marker that does not parse."""


def tool_script(prompt: str) -> ToolScript | None:
    """The script in ``prompt``'s ``[sim:tools=...]`` marker, or ``None`` without one."""
    start = prompt.find(_START)
    if start < 0:
        return None
    pos = start + len(_START)
    turns: list[tuple[tuple[str, str], ...]] = []
    calls: list[tuple[str, str]] = []
    while True:
        found = _CALL.match(prompt, pos)
        if found is None:
            raise ScriptError(
                f"sim: cannot read the tool script at {prompt[pos : pos + 40]!r}; write "
                '[sim:tools=name({"arg": 1});other({})|name({})] (";" between the calls '
                'of one turn, "|" between turns)'
            )
        name, arguments, sep = found.groups()
        calls.append((name, arguments.strip() or "{}"))
        pos = found.end()
        if sep != ";":
            turns.append(tuple(calls))
            calls = []
        if sep == "]":
            return tuple(turns)


def scripted_calls(script: ToolScript, messages: list[Message]) -> tuple[ToolCall, ...]:
    """This turn's calls (none once the script is done: the model then answers).

    The turn is the number of assistant tool-call messages since the last user message.
    """
    turn = 0
    for message in reversed(messages):
        role = message["role"]
        if role == "user":
            break
        if role == "assistant" and message.get("tool_calls"):
            turn += 1
    if turn >= len(script):
        return ()
    return tuple(
        ToolCall(id=f"call_{turn}_{index}", name=name, arguments=arguments)
        for index, (name, arguments) in enumerate(script[turn])
    )
