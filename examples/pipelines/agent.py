"""An agent: an llm node that answers a record's ``question`` with two tools.

The model sees ``search_notes`` (async, like a call to a search service) and
``lookup_unit`` (a plain function, run in a thread off the event loop). It calls
them (several at once when it likes), reads the results and answers; ``max_steps``
caps the turns that call tools. The run's ``nodes.answer.transcript`` holds the
whole conversation. Offline, on the default simulated provider::

    fanout run examples/pipelines/agent.py:dag -i examples/data/questions.jsonl -o out/

In a prompt, ``[sim:tools=search_notes({"query": "tea"});lookup_unit({"name": "kcal"})]``
scripts the simulated model's tool calls (see ``fanout.sim``).
"""

import asyncio

from fanout import DAG

_NOTES = {
    "tea": "Green tea steeps at 80C for two minutes; black tea at 95C for four.",
    "kettle": "The kettle holds 1.7 litres and boils in about three minutes.",
    "bread": "A loaf needs 500 g flour, 7 g yeast, 10 g salt and 300 ml water.",
}
_UNITS = {"kcal": "1 kcal = 4.184 kJ", "litre": "1 litre = 1000 ml", "cup": "1 cup = 240 ml"}


async def search_notes(query: str) -> list[str]:
    """Search the kitchen notes by keywords; returns the notes that share a word with the query."""
    await asyncio.sleep(0)  # stands in for a call to a search service
    words = {w.strip("?.,!").lower() for w in query.split()} - {""}
    found = [
        note
        for topic, note in _NOTES.items()
        if words & ({topic} | {w.strip(".,;").lower() for w in note.split()})
    ]
    return found or [f"no note matches {query!r}; topics: {', '.join(_NOTES)}"]


def lookup_unit(name: str) -> str:
    """Convert a unit name (kcal, litre, cup) into its definition."""
    return _UNITS.get(name.strip().lower(), f"unknown unit {name!r}; known: {sorted(_UNITS)}")


dag = DAG("kitchen_agent", description="Answer a question with note-search and unit tools.")
question = dag.input("question")
answer = dag.llm(
    "fast",
    "Answer the question using search_notes and lookup_unit when they help. Question: {question}",
    tools=[search_notes, lookup_unit],
    max_steps=4,
    max_tokens=160,
    name="answer",
)
dag.output(answer=answer)
