"""The call journal: a completed call is answered from it, never paid for twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import ListSink, sim_config

from fanout import DAG, Engine
from fanout.run import CallJournal, call_key
from fanout.sim import FakeClock, SimProvider
from fanout.types import ChatRequest, ChatResponse, ToolCall, Usage


def _request(text: str) -> ChatRequest:
    return ChatRequest(model="m", messages=[{"role": "user", "content": text}], max_tokens=5)


def once() -> DAG:
    dag = DAG("once")
    dag.input("text")
    dag.output(a=dag.llm("fast", "Rate {text}", name="a"))
    return dag


def test_calls_written_by_one_process_are_read_by_another(tmp_path: Path) -> None:
    first = CallJournal(tmp_path, writer_id="w1")
    response = ChatResponse(
        content=None,
        usage=Usage(7, 3),
        finish_reason="tool_calls",
        tool_calls=(ToolCall("c1", "lookup", '{"q": "x"}'),),
        model="m-1",
    )
    key = call_key("p", _request("hello"))
    first.put(key, response)
    (tmp_path / "w0.jsonl").write_text('{"key": "torn", "cont', encoding="utf-8")  # killed writer
    second = CallJournal(tmp_path, writer_id="w2")
    assert second.get(key) == response
    assert second.get(call_key("p", _request("other"))) is None
    assert call_key("p", _request("hello")) != call_key("q", _request("hello"))
    assert second.replayed == 1
    first.close()
    second.close()


async def test_an_engine_with_a_journal_pays_once_for_a_call(
    clock: FakeClock, tmp_path: Path
) -> None:
    dag = once()
    provider = SimProvider.from_config("sim", sim_config().providers["sim"], clock=clock)  # type: ignore[arg-type]
    journal = CallJournal(tmp_path, writer_id="w")
    async with Engine(sim_config(), providers={"sim": provider}, clock=clock, journal=journal) as e:
        first = await e.run(dag, {"text": "great"})
    assert provider.calls == 1 and first.usage.input_tokens > 0
    # a new process (a restarted worker, a resumed job) reads what the first one finished
    provider2 = SimProvider.from_config("sim", sim_config().providers["sim"], clock=clock)  # type: ignore[arg-type]
    again = CallJournal(tmp_path, writer_id="w-restarted")
    async with Engine(sim_config(), providers={"sim": provider2}, clock=clock, journal=again) as e:
        second = await e.run(dag, {"text": "great"})
        other = await e.run(dag, {"text": "awful"})
    assert second.outputs == first.outputs
    assert provider2.calls == 1  # only "awful" was new
    assert second.cost_usd == 0.0 and other.cost_usd > 0  # paid once, by the first run


async def test_a_call_answered_from_the_journal_leaves_a_replayed_attempt_row(
    clock: FakeClock, tmp_path: Path
) -> None:
    dag = once()
    journal = CallJournal(tmp_path, writer_id="w")
    first_sink, second_sink = ListSink(), ListSink()
    async with Engine(sim_config(), clock=clock, journal=journal, traces=first_sink) as e:
        await e.run(dag, {"text": "great"})
    again = CallJournal(tmp_path, writer_id="w-restarted")
    async with Engine(sim_config(), clock=clock, journal=again, traces=second_sink) as e:
        result = await e.run(dag, {"text": "great"})
    (made,) = [s for s in first_sink.spans if s.record_type == "attempt"]
    (replayed,) = [s for s in second_sink.spans if s.record_type == "attempt"]
    assert made.replayed is None and made.input_tokens and made.cost_usd
    assert replayed.replayed is True and replayed.status == "ok"
    # it keeps the cost it had, as already spent: the same call (key) as the row that paid
    paid = (made.input_tokens, made.output_tokens, made.cost_usd)
    assert (replayed.input_tokens, replayed.output_tokens, replayed.cost_usd) == paid
    assert replayed.call_key == made.call_key and made.call_key is not None
    assert replayed.output_hmac == made.output_hmac  # the same answer
    (node,) = [s for s in second_sink.spans if s.record_type == "node"]
    assert replayed.parent_span_id == node.span_id and result.calls == 0
    # the record's cost is whole; this run spent nothing
    assert result.cost_usd == 0.0 and result.replayed_cost_usd == made.cost_usd


def test_lookups_read_calls_back_from_the_files_and_memory_stays_per_call_small(
    tmp_path: Path,
) -> None:
    import json
    import tracemalloc

    writer = CallJournal(tmp_path, writer_id="w1")
    n = 20_000
    for i in range(n):
        reply = ChatResponse(content=f"answer {i} " * 20, usage=Usage(i, 1), model="m")
        writer.put(call_key("p", _request(f"q{i}")), reply, record=f"r{i}")
    writer.close()
    # an older version's line (spaces after separators) and a killed writer's torn line
    old_key = call_key("p", _request("old"))
    old = {"key": old_key, "record": None, "content": "from before", "finish_reason": "stop",
           "tool_calls": [], "model": "m", "usage": [1, 2]}  # fmt: skip
    (tmp_path / "w0.jsonl").write_text(json.dumps(old) + "\n" + '{"key": "ab', encoding="utf-8")
    tracemalloc.start()
    reader = CallJournal(tmp_path, writer_id="w2")
    assert reader.reload() == n + 1
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the index, not the replies: ~16 bytes a call (the replies alone are ~200 bytes each)
    assert held < n * 64, held
    for i in (0, 1, n // 2, n - 1):
        found = reader.get(call_key("p", _request(f"q{i}")))
        assert found is not None and found.usage == Usage(i, 1)
        assert found.content == f"answer {i} " * 20
    assert reader.get(old_key) == ChatResponse(content="from before", usage=Usage(1, 2), model="m")
    assert reader.get(call_key("p", _request("never made"))) is None
    assert reader.replayed == 5
    reader.close()


def _response(tokens: int) -> ChatResponse:
    return ChatResponse(content="x", usage=Usage(tokens, 1), finish_reason="stop", model="m")


def test_the_journal_is_the_jobs_account_of_spend_across_compactions(tmp_path: Path) -> None:
    from fanout.run import compact_journal, journal_spend

    journal = CallJournal(tmp_path, writer_id="run1")
    for i in range(10):  # five records, two calls each
        key = call_key("p", _request(f"r{i}"))
        journal.put(key, _response(9), record=f"rec{i // 2}", cost_usd=0.001)
    journal.spend(usd=0.004, tokens=40, record="rec4")  # a call that timed out once sent
    journal.close()
    before = journal_spend(tmp_path)
    assert (before.calls, before.tokens) == (11, 10 * 10 + 40)
    assert before.usd == pytest.approx(0.014)
    kept, dropped = compact_journal(tmp_path, lambda record: record == "rec4")
    assert (kept, dropped) == (2, 8)  # the dropped calls' spending is carried, not lost
    assert journal_spend(tmp_path) == before
    again = CallJournal(tmp_path, writer_id="run2")
    again.put(call_key("p", _request("new")), _response(9), record="rec5", cost_usd=0.002)
    again.close()
    compact_journal(tmp_path, lambda record: False)  # a second compaction carries the first
    total = journal_spend(tmp_path)
    assert (total.calls, total.tokens) == (12, before.tokens + 10)
    assert total.usd == pytest.approx(0.016)


def test_a_kill_between_compacting_and_removing_counts_nothing_twice(tmp_path: Path) -> None:
    import shutil

    from fanout.run import compact_journal, journal_spend

    journal = CallJournal(tmp_path, writer_id="w")
    key = call_key("p", _request("a"))
    journal.put(key, _response(9), record="done", cost_usd=0.5)
    journal.put(call_key("p", _request("b")), _response(9), record="open", cost_usd=0.25)
    journal.close()
    saved = tmp_path.parent / "saved.jsonl"
    shutil.copy(tmp_path / "w.jsonl", saved)
    compact_journal(tmp_path, lambda record: record == "open")
    shutil.copy(saved, tmp_path / "w.jsonl")  # as if the kill came before the old file went
    assert journal_spend(tmp_path).usd == pytest.approx(0.75)
    reader = CallJournal(tmp_path, writer_id="r")
    assert reader.get(key) is None  # the replaced file is not read either
    assert reader.get_paid(call_key("p", _request("b"))) == (_response(9), 0.25)
    reader.close()
