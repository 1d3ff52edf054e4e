"""Tool calls that wait for a person: a paused turn of an agent loop, and its resume.

When the model calls a tool marked for approval (``Tool.from_function(f,
approval=True)``, ``mcp("name", approval=[...])``) and no person has decided that
call yet, the turn's other calls run, and the node pauses: a review per waiting call
(its value: the tool, the server, the arguments) and the conversation so far go to
the run's checkpoint. The resume picks the conversation up at that turn: approved
calls run, edited ones run with the reviewer's arguments, rejected ones answer the
model with an error naming the reason; no model call that completed is made again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import cast

from fanout.run._review import ReviewState
from fanout.store import Review
from fanout.types import Message, ToolCall

__all__ = [
    "PAUSED",
    "PausedTurn",
    "ToolPaused",
    "decide",
    "review_key",
    "review_request",
    "take_paused",
]

PAUSED = "#paused"  # the checkpoint's outputs key for paused turns (never a node id)


@dataclass(frozen=True, slots=True)
class PausedTurn:
    """An agent loop stopped at a turn whose calls wait for approval."""

    alias: str  # the model of the chain the conversation is with
    messages: list[Message]  # up to and including the assistant's tool calls
    calls: tuple[ToolCall, ...]  # that turn's calls
    done: dict[str, str]  # call id -> result, for the calls that already ran
    steps: int  # tool turns so far (max_steps counts on)

    def to_json(self) -> dict[str, object]:
        return {
            "alias": self.alias,
            "messages": self.messages,
            "calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.calls],
            "done": self.done,
            "steps": self.steps,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> PausedTurn:
        calls = cast(list[dict[str, str]], data["calls"])
        return cls(
            alias=str(data["alias"]),
            messages=cast(list[Message], data["messages"]),
            calls=tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in calls),
            done={str(k): str(v) for k, v in cast(dict[str, object], data["done"]).items()},
            steps=int(cast(int, data["steps"])),
        )


class ToolPaused(Exception):  # a control signal, not an error
    """Raised out of an agent loop whose turn waits for approval; the executor turns it
    into a ``waiting_for_review`` node."""

    def __init__(self, turn: PausedTurn, pending: list[tuple[str, object, str]]) -> None:
        super().__init__(f"{len(pending)} tool call(s) wait for approval")
        self.turn = turn
        self.pending = pending


def review_key(node_id: str, steps: int, index: int, call: ToolCall) -> str:
    """The review's node column for call ``index`` of turn ``steps`` of ``node_id``
    (unique in the run: a node id has no ':' or '@')."""
    return f"{node_id}:{call.name}@{steps}.{index}"


def review_request(key: str, call: ToolCall, server: str | None) -> tuple[str, object, str]:
    """A pending review of ``call``: (key, value, instructions)."""
    try:
        arguments: object = call.parsed_arguments()
    except ValueError:
        arguments = call.arguments
    value = {"tool": call.name, "server": server, "arguments": arguments}
    where = f" on MCP server {server!r}" if server else ""
    instructions = (
        f"the model calls tool {call.name!r}{where} with these arguments: approve to run "
        "it, edit to run it with other arguments (the new arguments object), or reject "
        "(the model is told the reason)"
    )
    return key, value, instructions


def decide(call: ToolCall, decision: Review | None) -> ToolCall | str | None:
    """What a decision makes of ``call``: the call to run (approved, or edited
    arguments), an error text for the model (rejected), ``None``: not decided yet."""
    if decision is None or decision.status == "pending":
        return None
    if decision.status == "approved":
        return call
    if decision.status == "edited":
        edited = decision.edited_value
        if isinstance(edited, dict) and "tool" in edited and "arguments" in edited:
            edited = edited["arguments"]
        text = edited if isinstance(edited, str) else json.dumps(edited, ensure_ascii=False)
        return replace(call, arguments=text)
    by = f" by {decision.decided_by}" if decision.decided_by else ""
    why = f": {decision.reason}" if decision.reason else ""
    return f"error: a person rejected this call of {call.name}{by}{why}"


def take_paused(review: ReviewState | None, node_id: str) -> PausedTurn | None:
    """The paused turn ``node_id`` resumes from, if any (taken: a new pause replaces it)."""
    if review is None:
        return None
    data = review.paused.pop(node_id, None)
    return PausedTurn.from_json(cast(dict[str, object], data)) if isinstance(data, dict) else None
