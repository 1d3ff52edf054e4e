"""Classify each review's sentiment with one call on the ``fast`` model.

Run it (the embedded simulated provider answers offline; pass ``--config`` for real models)::

    fanout run examples/pipelines/classify.py:dag --input examples/data/reviews.jsonl --output out/
    fanout run examples/pipelines/classify.py:dag --config examples/fanout.toml \\
        --input examples/data/reviews.jsonl --output out/

Each record needs a ``text`` field; ``out/results/`` gets one row per record
with ``output_label`` holding the label as text (``positive``).
"""

from fanout import DAG

dag = DAG("classify", description="One label per review: positive, negative or neutral.")
text = dag.input("text", type=str)  # checked before any call: a number or null is refused
label = dag.llm(
    "fast",
    "Classify the sentiment of this review as positive, negative or neutral. "
    "Answer with the label only. Review: {text}",
    max_tokens=5,
    name="label",
)
dag.output(label=label)
