"""``EscalationSink``: LLM steps whose every option failed, written for a person to handle."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from fanout.clock import Clock
from fanout.types import Message

__all__ = ["EscalationSink"]


class EscalationSink:
    """Appends one JSON line per escalated step: request, node, model chain, messages, error.

    Each line is flushed as it is written, so a crash loses nothing already escalated.
    The messages are the rendered inputs of the step (they may hold personal data: the
    file is the review queue, keep it where such data may live).
    """

    def __init__(self, path: str | Path, *, clock: Clock) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self.count = 0

    def escalate(
        self,
        *,
        request_id: str,
        dag: str,
        node: str,
        models: list[str],
        messages: list[Message],
        error: BaseException,
    ) -> None:
        record = {
            "time": self._clock.wall().isoformat(),
            "request_id": request_id,
            "dag": dag,
            "node": node,
            "models_tried": models,
            "messages": messages,
            "error_type": type(error).__name__,
            "error_message": str(error),
        }
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as file:
            file.write(line)
            self.count += 1
