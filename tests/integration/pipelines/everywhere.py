"""One pipeline for every wire protocol: a classifier, an agent with a tool, a structured
triage. It names only the alias ``fast``; the config says which provider that is."""

from pydantic import BaseModel

from fanout import DAG

LOOKUPS: list[int] = []  # the ids the agent looked up, in order (the test reads them)
SYSTEM = (
    "You are the support desk's triage assistant. Read the ticket, decide how urgent it "
    "is on a scale of one to five, and summarise it in one short sentence for the queue."
)


class Triage(BaseModel):
    priority: int
    summary: str


def lookup(id: int) -> str:
    """Look an order up by its id."""
    LOOKUPS.append(id)
    return f"order {id} shipped"


dag = DAG("everywhere")
dag.input("text")
dag.output(
    label=dag.llm("fast", "Sentiment of: {text}", max_tokens=5),
    answer=dag.llm(
        "fast",
        '[sim:tools=lookup({{"id": 1}})|lookup({{"id": 2}})] Where are my orders? {text}',
        tools=[lookup],
        max_steps=4,
        name="agent",
    ),
    triage=dag.llm("fast", "Triage this ticket: {text}", system=SYSTEM, output=Triage),
)
