"""The sim's ``[sim:tools=...]`` script: parsed into turns, replayed turn by turn, errors named."""

from __future__ import annotations

import pytest

from fanout.errors import ProviderHTTPError
from fanout.sim import SimProvider
from fanout.sim._script import ScriptError, tool_script
from fanout.types import ChatRequest, Message, ToolSpec

TOOLS = (
    ToolSpec("search", "Search.", {"type": "object", "properties": {"q": {"type": "string"}}}),
    ToolSpec("lookup", "Look up.", {"type": "object", "properties": {"id": {"type": "integer"}}}),
)


def test_a_script_parses_into_turns_of_calls() -> None:
    prompt = 'Hi [sim:tools=search({"q": "a;b|c]"}) ; lookup({"id": 1})|lookup()|x.y-z({oops)] end'
    assert tool_script(prompt) == (
        (("search", '{"q": "a;b|c]"}'), ("lookup", '{"id": 1}')),
        (("lookup", "{}"),),
        (("x.y-z", "{oops"),),
    )
    assert tool_script("no marker here [sim:latency=5]") is None


@pytest.mark.parametrize("bad", ["[sim:tools=]", "[sim:tools=search]", "[sim:tools=search({})"])
def test_a_script_that_does_not_parse_names_the_syntax(bad: str) -> None:
    with pytest.raises(ScriptError, match=r'write \[sim:tools=name\(\{"arg": 1\}\)'):
        tool_script(bad)


async def test_the_provider_replays_the_script_turn_by_turn_then_answers() -> None:
    provider = SimProvider(latency_ms=0)
    prompt = 'Find it [sim:tools=search({"q": "x"});lookup({"id": 1})|lookup({"id": 2})]'
    messages: list[Message] = [{"role": "user", "content": prompt}]
    turns = []
    for _ in range(3):
        reply = await provider.complete(ChatRequest(model="m", messages=messages, tools=TOOLS))
        turns.append([(c.name, c.arguments) for c in reply.tool_calls])
        if not reply.tool_calls:
            assert reply.finish_reason == "stop"
            assert reply.content == "Based on search: r0; Based on lookup: r1; Based on lookup: r2"
            break
        assert reply.finish_reason == "tool_calls" and reply.content is None
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [c.to_wire() for c in reply.tool_calls],
            }
        )
        for call in reply.tool_calls:
            count = sum(m["role"] == "tool" for m in messages)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": f"r{count}"})
    assert turns == [
        [("search", '{"q": "x"}'), ("lookup", '{"id": 1}')],
        [("lookup", '{"id": 2}')],
        [],
    ]
    ids = [c["id"] for m in messages for c in m.get("tool_calls") or ()]
    assert len(set(ids)) == 3  # each call its own id, as the tool messages need


async def test_without_tools_offered_the_script_is_ignored() -> None:
    provider = SimProvider(latency_ms=0)
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "[sim:tools=a()] hi"}])
    reply = await provider.complete(request)
    assert reply.tool_calls == () and reply.content == "sim reply: hi"


async def test_a_bad_script_is_a_400_that_is_not_retried() -> None:
    provider = SimProvider(latency_ms=0)
    request = ChatRequest(
        model="m", messages=[{"role": "user", "content": "[sim:tools=search(] x"}], tools=TOOLS
    )
    with pytest.raises(ProviderHTTPError, match="cannot read the tool script") as caught:
        await provider.complete(request)
    assert caught.value.status_code == 400 and not caught.value.retryable
