"""Call counters the fake providers keep, so tests can prove a call was (not) made."""

from __future__ import annotations

__all__ = ["CallCounters"]


class CallCounters:
    """``calls`` (every call), ``calls_by_model``, ``in_flight`` and its peak ``max_in_flight``."""

    def __init__(self) -> None:
        self.calls = 0
        self.calls_by_model: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0

    def reset_counters(self) -> None:
        """Zero the counters (the peak restarts from the calls in flight now)."""
        self.calls = 0
        self.calls_by_model = {}
        self.max_in_flight = self.in_flight

    def _call_started(self, model: str) -> None:
        self.calls += 1
        by_model = self.calls_by_model
        by_model[model] = by_model.get(model, 0) + 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def _call_ended(self) -> None:
        self.in_flight -= 1
