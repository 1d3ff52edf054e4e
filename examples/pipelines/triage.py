"""Routing by task complexity: a cheap model triages each request, hard ones go to a strong model.

Run it (the simulated provider answers offline; its triage rule: a request over 25
words or with several questions is ``hard``)::

    fanout run examples/pipelines/triage.py:dag --config examples/fanout.toml \\
        --input examples/data/tickets.jsonl --output out/ --key id

``fast`` classifies every record with a 3-token answer and answers the easy ones;
only the hard ones pay for ``smart``. ``benchmarks/triage_cost.py`` prints what
this saves against sending every record to ``smart`` (``strong_only`` below).
"""

from fanout import DAG


def difficulty(level: str) -> str:
    """The route's branch: ``hard`` when the triage says so, else ``easy``."""
    return "hard" if "hard" in level.lower() else "easy"


ANSWER = "Answer this customer support request. Request: {text}"

dag = DAG("triage", description="Cheap triage; hard requests routed to the strong model.")
text = dag.input("text")
level = dag.llm(
    "fast",
    "Is this customer support request easy or hard to answer well? Reply with one "
    "word, easy or hard. Request: {text}",
    max_tokens=3,
    name="level",
)
answer = dag.route(
    difficulty,
    level,
    {
        "easy": dag.llm("fast", ANSWER, max_tokens=300, name="easy_answer"),
        "hard": dag.llm("smart", ANSWER, max_tokens=300, name="hard_answer"),
    },
    name="answer",
)
dag.output(level=level, answer=answer)

strong_only = DAG("strong_only", description="The baseline: every request on the strong model.")
strong_only.input("text")
strong_only.output(answer=strong_only.llm("smart", ANSWER, max_tokens=300, name="answer"))
