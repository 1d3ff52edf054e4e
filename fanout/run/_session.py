"""A run's hold on its session: load history and state, then save the turn or let go."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

from pydantic import BaseModel, ValidationError

from fanout.dag import DAG, HISTORY, STATE, SessionSpec, render_value
from fanout.errors import ConfigError
from fanout.run._result import RunResult
from fanout.store import SessionRecord, SessionStore
from fanout.types import Message, RunStatus, content_text

__all__ = [
    "SUMMARY_PREFIX",
    "SessionHold",
    "Summarize",
    "fresh_inputs",
    "open_session",
    "summary_dag",
]

SUMMARY_PREFIX = "Summary of the earlier conversation: "
"""How the history's summary message starts (a ``system`` message, first in the history)."""

Summarize = Callable[[str], Awaitable[RunResult]]
"""Runs the summary call over a transcript (the engine's: traced, under the run's budget)."""


@dataclass(slots=True)
class SessionHold:
    """A leased session during one run; :meth:`close` saves the turn or releases it."""

    store: SessionStore
    spec: SessionSpec
    record: SessionRecord
    owner: str

    def inputs(self) -> dict[str, object]:
        """The session inputs of the DAG: its history and its state."""
        return {HISTORY: list(self.record.messages), STATE: _state(self.spec, self.record)}

    def release_now(self) -> None:
        """Release the session at once (a run that raised or was cancelled; one short
        transaction, so blocking the loop for it beats losing it to a second cancel)."""
        self.store.release(self.record.session_id, self.owner)

    async def close(
        self, inputs: Mapping[str, object], result: RunResult, summarize: Summarize | None = None
    ) -> RunResult:
        """Save the turn of a run that ended ``ok``; release the session otherwise.

        Returns ``result``, with the summary call's usage and cost added if one was made.
        """
        sid = self.record.session_id
        if result.status != RunStatus.OK:
            await asyncio.to_thread(self.store.release, sid, self.owner)
            return result
        try:
            state_json = self._new_state(result)
        except ConfigError:
            await asyncio.to_thread(self.store.release, sid, self.owner)
            raise
        turn: list[Message] = [
            {"role": "user", "content": render_value(inputs[self.spec.user])},
            {"role": "assistant", "content": render_value(result.outputs.get(self.spec.answer))},
        ]
        try:
            messages, summary = await self._bound([*self.record.messages, *turn], summarize)
        except BaseException:
            self.release_now()
            raise
        await asyncio.to_thread(
            self.store.save,
            sid,
            self.owner,
            messages=messages,
            state_json=state_json,
            version=self.record.version,
        )
        if summary is None:
            return result
        return replace(
            result,
            usage=result.usage + summary.usage,
            cost_usd=result.cost_usd + summary.cost_usd,
        )

    async def _bound(
        self, messages: list[Message], summarize: Summarize | None
    ) -> tuple[list[Message], RunResult | None]:
        """The history to store: at most ``keep_turns`` turns (after a summary, if any)."""
        keep = self.spec.keep_turns
        starts = _turn_starts(messages)
        if len(starts) <= keep:
            return messages, None
        if self.spec.summarize is None or summarize is None:
            return messages[starts[-keep] :], None
        # Fold all but the newest half, so a summary call comes every keep/2 turns, not
        # every turn.
        cut = starts[-max(1, keep // 2)]
        run = await summarize(_transcript(messages[:cut]))
        text = run.outputs.get("summary")
        if run.ok and isinstance(text, str) and text.strip():
            summary: Message = {"role": "system", "content": SUMMARY_PREFIX + text.strip()}
            return [summary, *messages[cut:]], run
        # The summary call failed (budget, provider): drop the oldest turns instead,
        # keeping the summary made before.
        previous = [m for m in messages[:1] if _is_summary(m)]
        return [*previous, *messages[starts[-keep] :]], run

    def _new_state(self, result: RunResult) -> str | None:
        model = self.spec.state
        if model is None or STATE not in result.outputs:
            return self.record.state_json
        value = result.outputs[STATE]
        try:
            state = value if isinstance(value, model) else model.model_validate(value)
        except ValidationError as exc:
            raise ConfigError(
                f"session {self.record.session_id!r}: output 'state' is not a valid "
                f"{model.__name__} ({exc.error_count()} error(s)); return a {model.__name__}"
            ) from None
        return state.model_dump_json()


async def open_session(
    store: SessionStore | None, dag: DAG, session_id: str, ttl_s: float
) -> SessionHold:
    """Lease ``session_id`` for a run of ``dag``; raises ``SessionBusy`` if another run has it."""
    spec = check_session(dag)
    if store is None:
        raise ConfigError(
            f"session_id {session_id!r}: this engine has no session store; pass "
            "Engine(store=SQLiteStore(path)) or set data_dir in the config"
        )
    if not session_id or len(session_id) > 200:
        raise ConfigError("session_id must be a non-empty string of at most 200 characters")
    owner = uuid.uuid4().hex
    record = await asyncio.to_thread(store.acquire, session_id, owner, ttl_s)
    return SessionHold(store, spec, record, owner)


def check_session(dag: DAG) -> SessionSpec:
    """The DAG's session declaration, checked against its outputs."""
    spec = dag.session_spec
    if spec is None:
        raise ConfigError(
            f"DAG {dag.name!r} has no session; declare dag.session(user=..., answer=...) "
            "to run it with a session_id"
        )
    if spec.answer not in dag.outputs:
        raise ConfigError(
            f"DAG {dag.name!r}: session answer={spec.answer!r} is not an output "
            f"(outputs: {list(dag.outputs)}); dag.output({spec.answer}=ref)"
        )
    return spec


def fresh_inputs(dag: DAG) -> dict[str, object]:
    """The session inputs of a run without a session_id: no history, a default state."""
    spec = dag.session_spec
    if spec is None:
        return {}
    return {HISTORY: [], STATE: spec.state() if spec.state is not None else None}


def summary_dag(alias: str) -> DAG:
    """The summary call: one llm step over a ``transcript``; its output is ``summary``."""
    dag = DAG("session_summary")
    transcript = dag.input("transcript")
    summary = dag.llm(
        alias,
        "Summarise this conversation in a few sentences for the assistant that continues "
        "it: keep the facts, names, numbers and decisions it will need.\n\n{transcript}",
        transcript=transcript,
        max_tokens=_SUMMARY_MAX_TOKENS,
        name="summary",
    )
    dag.output(summary=summary)
    return dag


_SUMMARY_MAX_TOKENS = 400  # a summary is a paragraph; this also caps its cost


def _turn_starts(messages: list[Message]) -> list[int]:
    """Where each turn starts: at its user message."""
    return [i for i, m in enumerate(messages) if m.get("role") == "user"]


def _is_summary(message: Message) -> bool:
    content = message.get("content")
    return message.get("role") == "system" and str(content).startswith(SUMMARY_PREFIX)


def _transcript(messages: list[Message]) -> str:
    lines = []
    for m in messages:
        content = content_text(m.get("content"))
        if _is_summary(m):
            lines.append(f"(earlier summary) {content.removeprefix(SUMMARY_PREFIX)}")
        else:
            lines.append(f"{m.get('role')}: {content}")
    return "\n".join(lines)


def _state(spec: SessionSpec, record: SessionRecord) -> BaseModel | None:
    if spec.state is None:
        return None
    if record.state_json is None:
        return spec.state()
    try:
        return spec.state.model_validate_json(record.state_json)
    except ValidationError:
        raise ConfigError(
            f"session {record.session_id!r}: its stored state does not fit "
            f"{spec.state.__name__} (the model changed?); migrate it or start a new session"
        ) from None
