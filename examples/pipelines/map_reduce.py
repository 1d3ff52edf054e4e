"""Fan out over the sentences of each review, then fan back in.

One tool call splits ``text`` into sentences, ``map`` rates each sentence on the
``fast`` model in parallel, a Python ``reduce`` counts the labels, and one fan-in
call on ``smart`` summarises the review given its ratings. Run it::

    fanout run examples/pipelines/map_reduce.py:dag \\
        --input examples/data/reviews.jsonl --output out/
"""

import re

from fanout import DAG


def split_sentences(text: str) -> list[str]:
    """Split at '.', '!' and '?', dropping empty pieces."""
    return [part.strip() for part in re.split(r"[.!?]+", text) if part.strip()]


def count_labels(labels: list[str]) -> dict[str, int]:
    """How many sentences got each label."""
    counts: dict[str, int] = {}
    for label in labels:
        key = str(label).strip().lower()
        counts[key] = counts.get(key, 0) + 1
    return counts


dag = DAG("map_reduce", description="Per-sentence sentiment, counted and summarised.")
text = dag.input("text")
sentences = dag.tool(split_sentences, text, inline=True)
ratings = dag.map(
    dag.llm("fast", "Rate the sentiment of this sentence: {item}", max_tokens=5, name="ratings"),
    over=sentences,
    concurrency=8,  # at most 8 sentences of one review in flight
)
counts = dag.reduce(count_labels, ratings, inline=True, name="counts")
summary = dag.llm(
    "smart",
    "Summarise this review in one line, given its per-sentence ratings {ratings}: {text}",
    ratings=ratings,
    max_tokens=60,
    name="summary",
)
dag.output(ratings=ratings, counts=counts, summary=summary)
