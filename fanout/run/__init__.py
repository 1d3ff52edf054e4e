"""The async executor of DAG instances, and the ``Engine`` that owns providers and models."""

from fanout.run._cache import ResponseCache
from fanout.run._chat import ChatResult
from fanout.run._context import MapOffload
from fanout.run._engine import Engine, check_capabilities, check_inputs
from fanout.run._journal import (
    CallJournal,
    Spend,
    call_key,
    compact_journal,
    journal_spend,
    response_entry,
    response_from,
)
from fanout.run._outage import Outage
from fanout.run._result import NodeResult, RunResult
from fanout.run._review import needs_review
from fanout.run._stream import TokenEvent

__all__ = [
    "CallJournal",
    "ChatResult",
    "Engine",
    "MapOffload",
    "NodeResult",
    "Outage",
    "ResponseCache",
    "RunResult",
    "Spend",
    "TokenEvent",
    "call_key",
    "check_capabilities",
    "check_inputs",
    "compact_journal",
    "journal_spend",
    "needs_review",
    "response_entry",
    "response_from",
]
