"""``BatchLog``: a job's provider batches, journaled in ``OUTPUT/batches`` before it relies on them.

What a later ``fanout run`` into the same directory needs to poll what was submitted
and never submit a call twice:

- ``log.jsonl``: one event per line, synced to disk as it is written: ``open`` (the
  batch's payload is in ``LABEL.in.jsonl``, about to be submitted under ``LABEL``),
  ``submitted`` (its batch id), ``ended`` (its final state; answered lines saved);
- ``LABEL.in.jsonl``: the payload exactly as submitted (a submit cut short by a kill
  is first looked for by its label, then made again with the same bytes);
- ``LABEL.out.jsonl``: the lines the batch answered, written whole before ``ended``;
- ``delivered-*.txt``: the ``custom_id`` of every answer handed to a call (one file per
  process, appended unbuffered). An answered line not delivered yet (its process died
  before the answer came) is still owed to its call: a later run claims it unpaid.

A ``custom_id`` is the first 48 hex digits of the call's key (:func:`fanout.run.call_key`),
a dash and a suffix unique to the line (within Anthropic's 64 characters).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from fanout.errors import ConfigError
from fanout.run import response_entry, response_from
from fanout.types import ChatResponse

__all__ = ["BATCHES_DIR", "BatchLog", "LoggedBatch", "key_of"]

BATCHES_DIR = "batches"
KEY_CHARS = 48


def key_of(custom_id: str) -> str:
    """The call-key prefix a ``custom_id`` was made from."""
    return custom_id[:KEY_CHARS]


@dataclass
class LoggedBatch:
    """One batch as the log knows it."""

    label: str
    model: str
    lines: int
    tokens: int
    opened_at: float
    batch_id: str | None = None
    submitted_at: float | None = None
    state: str | None = None  # set when it ended
    ended_at: float | None = None
    error_code: str | None = None
    custom_ids: list[str] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.state is not None


class BatchLog:
    """The ``OUTPUT/batches`` directory of one job (see the module docstring)."""

    def __init__(self, directory: str | Path, *, writer_id: str) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot use batch directory {str(self.directory)!r}: {exc.strerror or exc}; "
                "pick a writable --output"
            ) from None
        self._log = os.open(
            self.directory / "log.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        self._delivered_path = self.directory / f"delivered-{writer_id}.txt"
        self._delivered: int | None = None

    # -- reading what earlier runs left ----------------------------------------------

    def batches(self) -> dict[str, LoggedBatch]:
        """Every batch of the log by label, with its custom ids."""
        found: dict[str, LoggedBatch] = {}
        with (self.directory / "log.jsonl").open("rb") as lines:
            for line in lines:
                try:
                    event = orjson.loads(line)
                except ValueError:  # a line cut by a kill: that event did not happen
                    continue
                label = event.get("label")
                if event.get("e") == "open":
                    found[label] = LoggedBatch(
                        label, event["model"], event["lines"], event["tokens"], event["at"]
                    )
                elif label in found:
                    batch = found[label]
                    if event.get("e") == "submitted":
                        batch.batch_id, batch.submitted_at = event["batch_id"], event["at"]
                    elif event.get("e") == "ended":
                        batch.state, batch.ended_at = event["state"], event.get("at")
                        batch.error_code = event.get("error_code")
        for batch in found.values():
            batch.custom_ids = list(self._payload_ids(batch.label))
        return found

    def _payload_ids(self, label: str) -> Iterator[str]:
        with self.payload_path(label).open("rb") as lines:
            for line in lines:
                if line.strip():
                    yield str(orjson.loads(line)["custom_id"])

    def delivered(self) -> set[str]:
        """The custom ids already handed to a call, by any run."""
        ids: set[str] = set()
        for path in self.directory.glob("delivered-*.txt"):
            ids.update(path.read_text(encoding="utf-8").split())
        return ids

    def answers(self, label: str) -> Iterator[tuple[str, ChatResponse]]:
        """The lines an ended batch answered: (custom id, reply)."""
        path = self._answers_path(label)
        if not path.exists():
            return
        with path.open("rb") as lines:
            for line in lines:
                entry = orjson.loads(line)
                yield entry["id"], response_from(entry)

    # -- writing -------------------------------------------------------------------

    def payload_path(self, label: str) -> Path:
        return self.directory / f"{label}.in.jsonl"

    def _answers_path(self, label: str) -> Path:
        return self.directory / f"{label}.out.jsonl"

    def open_batch(
        self, label: str, model: str, payload: bytes, lines: int, tokens: int, at: float
    ) -> None:
        """Keep the payload, then say it is about to be submitted (before it is)."""
        _write_whole(self.payload_path(label), payload)
        self._event(
            {
                "e": "open",
                "label": label,
                "model": model,
                "lines": lines,
                "tokens": tokens,
                "at": at,
            }
        )

    def submitted(self, label: str, batch_id: str, at: float) -> None:
        self._event({"e": "submitted", "label": label, "batch_id": batch_id, "at": at})

    def ended(
        self,
        label: str,
        state: str,
        at: float | None,
        answers: list[tuple[str, ChatResponse]],
        error_code: str | None = None,
    ) -> None:
        """Save the batch's answered lines, then mark it ended."""
        body = b"".join(
            orjson.dumps({"id": custom_id, **response_entry(r)}, option=orjson.OPT_APPEND_NEWLINE)
            for custom_id, r in answers
        )
        _write_whole(self._answers_path(label), body)
        self._event(
            {"e": "ended", "label": label, "state": state, "at": at, "error_code": error_code}
        )

    def deliver(self, custom_id: str) -> None:
        """Record that a call got this line's answer (one unbuffered write)."""
        if self._delivered is None:
            self._delivered = os.open(
                self._delivered_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
        os.write(self._delivered, custom_id.encode() + b"\n")

    def _event(self, event: dict[str, object]) -> None:
        os.write(self._log, orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        os.fsync(self._log)  # a batch is money: its record survives a power cut too

    def close(self) -> None:
        for fd in (self._log, self._delivered):
            if fd is not None:
                os.close(fd)
        self._delivered = None

    def __repr__(self) -> str:
        return f"BatchLog({str(self.directory)!r})"


def _write_whole(path: Path, data: bytes) -> None:
    """Write ``path`` so that it exists whole or not at all (a kill leaves no half file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
