"""``SessionSpec``: what a DAG declares about its session (turn, state model, history bound)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from fanout.dag._nodes import Ref

__all__ = ["HISTORY", "STATE", "Session", "SessionSpec"]

HISTORY = "history"
"""The input id under which a session's history (chat messages) reaches the DAG."""
STATE = "state"
"""The input id of the session's state, and the output name that replaces it."""


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """``user``: the input that is the user's message of a turn; ``answer``: the output
    that is the reply; ``state``: the pydantic model of the session's state (``None``:
    no state); ``keep_turns``: how many turns the stored history keeps; ``summarize``:
    a model alias that folds older turns into a summary instead of dropping them."""

    user: str
    answer: str
    state: type[BaseModel] | None
    keep_turns: int
    summarize: str | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """What ``dag.session(...)`` returns: refs to the loaded history and state."""

    history: Ref
    state: Ref
