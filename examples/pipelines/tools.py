"""An llm step that may call Python tools, then a plain tool step on its answer.

The model sees two tools built from these functions' signatures and docstrings;
when it calls one, the node runs it and sends the result back, up to
``max_steps`` times. A plain Python step then turns the answer into a ticket.
Run it::

    fanout run examples/pipelines/tools.py:dag --input examples/data/reviews.jsonl --output out/
"""

from fanout import DAG

_ORDERS = {"A1001": "shipped on Monday, arriving Thursday", "A1002": "delayed at the depot"}
_POLICIES = {"UK": "refunds within 30 days of delivery", "US": "refunds within 14 days"}


def get_order_status(order_id: str) -> str:
    """Look up where an order is, by its order id (e.g. A1001)."""
    return _ORDERS.get(order_id.strip().upper(), f"no order {order_id!r} on file")


def lookup_refund_policy(country: str) -> str:
    """The refund policy for a country code (e.g. UK, US)."""
    return _POLICIES.get(country.strip().upper(), "refunds within 14 days (default policy)")


def to_ticket(answer: str, text: str) -> dict[str, object]:
    """A support ticket: the drafted reply, and whether a human should look at it."""
    escalate = any(word in text.lower() for word in ("refund", "broken", "damaged", "missing"))
    return {"reply": answer.strip(), "needs_human": escalate, "chars": len(answer)}


dag = DAG("support_tools", description="Draft a support reply with order and policy tools.")
text = dag.input("text")
answer = dag.llm(
    "fast",
    "You are a support agent. Use get_order_status or lookup_refund_policy when they help, "
    "then draft a two-sentence reply to this customer: {text}",
    tools=[get_order_status, lookup_refund_policy],
    max_steps=3,
    max_tokens=120,
    name="answer",
)
ticket = dag.tool(to_ticket, answer, text, inline=True, name="ticket")
dag.output(answer=answer, ticket=ticket)
