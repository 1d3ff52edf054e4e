"""The demo pipeline ``triage``: per-sentence sentiment, a route to urgent or normal, a summary.

``fanout demo`` runs it over the bundled ``sample.jsonl`` on the simulated provider.
"""

from __future__ import annotations

import re

from fanout.dag import DAG

__all__ = ["dag", "pick_branch", "split_sentences"]

_SENTENCE_END = re.compile(r"[.!?]+")


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (split at ``.``, ``!`` and ``?``), without empty ones."""
    return [part.strip() for part in _SENTENCE_END.split(str(text)) if part and part.strip()]


def pick_branch(scores: list[str]) -> str:
    """``urgent`` when any sentence reads negative, else ``normal``."""
    negative = any(str(score).strip().lower() == "negative" for score in scores)
    return "urgent" if negative else "normal"


dag = DAG("triage", description="Triage customer messages: sentiment per sentence, route, summary.")
text = dag.input("text")
sentences = dag.tool(split_sentences, text, inline=True)
scores = dag.map(
    dag.llm("fast", "Rate the sentiment of: {item}", max_tokens=5, name="scores"),
    over=sentences,
)
label = dag.tool(pick_branch, scores, inline=True, name="label")
apology = dag.llm(
    "smart", "Write a short apology and next step for: {text}", max_tokens=80, name="apology"
)
reply = dag.route(
    pick_branch, scores, branches={"urgent": apology, "normal": "no action"}, name="reply"
)
summary = dag.llm(
    "smart",
    # The ratings are bound (fan-in); the review comes last, after the only colon.
    "Summarise this customer review in one line, given its per-sentence ratings {scores}: {text}",
    scores=scores,
    max_tokens=60,
    name="summary",
)
dag.output(summary=summary, label=label, reply=reply, scores=scores)
