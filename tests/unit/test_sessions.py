"""Sessions: a run with a session_id continues the conversation and its typed state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel
from support import sim_config

from fanout import DAG, ConfigError, Engine, RunStatus, SessionBusy, SQLiteStore
from fanout.errors import ProviderHTTPError
from fanout.sim import FunctionProvider
from fanout.trace import Span
from fanout.types import ChatRequest


class Notes(BaseModel):
    turns: int = 0
    topics: list[str] = []


def chat_dag(*, keep_turns: int = 20) -> DAG:
    """A chat over input ``question``: the reply is conversational, a tool counts turns."""
    dag = DAG("chat")
    question = dag.input("question")
    session = dag.session(user="question", answer="answer", state=Notes, keep_turns=keep_turns)
    answer = dag.llm("fast", "{question}", system="Be brief.", conversation=True)

    def next_state(notes: Notes, q: str) -> Notes:
        return Notes(turns=notes.turns + 1, topics=[*notes.topics, q])

    state = dag.tool(next_state, session.state, question, inline=True)
    dag.output(answer=answer, state=state)
    return dag


def echo(request: ChatRequest) -> str:
    """Replies with what it saw, so a test reads the history off the requests."""
    return f"re: {request.messages[-1].get('content')} ({len(request.messages)} messages)"


class Spans:
    """A trace sink that keeps (dag, record type, status) of every span."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def emit(self, span: Span) -> None:
        self.rows.append((span.dag_name, span.record_type, span.status))


def make_engine(
    store: Path | SQLiteStore, fn: object = echo, traces: Spans | None = None
) -> tuple[Engine, FunctionProvider]:
    provider = FunctionProvider("sim", fn)  # type: ignore[arg-type]
    engine = Engine(sim_config(), providers={"sim": provider}, store=store, traces=traces)
    return engine, provider


async def test_a_session_continues_across_two_runs(tmp_path: Path) -> None:
    engine, provider = make_engine(tmp_path)
    async with engine:
        first = await engine.run(chat_dag(), {"question": "tea?"}, session_id="s1")
        second = await engine.run(chat_dag(), {"question": "and coffee?"}, session_id="s1")
    assert first.status == second.status == RunStatus.OK
    sent = provider.requests[1].messages
    assert [(m["role"], m.get("content")) for m in sent] == [
        ("system", "Be brief."),
        ("user", "tea?"),
        ("assistant", "re: tea? (2 messages)"),
        ("user", "and coffee?"),
    ]
    assert second.outputs["state"] == Notes(turns=2, topics=["tea?", "and coffee?"])
    record = SQLiteStore(tmp_path).load("s1")
    assert record.version == 2
    assert Notes.model_validate_json(record.state_json or "") == Notes(
        turns=2, topics=["tea?", "and coffee?"]
    )
    assert [m["content"] for m in record.messages][-1] == "re: and coffee? (4 messages)"


async def test_sessions_are_separate_and_a_run_without_one_starts_fresh(tmp_path: Path) -> None:
    engine, provider = make_engine(tmp_path)
    async with engine:
        await engine.run(chat_dag(), {"question": "tea?"}, session_id="a")
        other = await engine.run(chat_dag(), {"question": "hi"}, session_id="b")
        alone = await engine.run(chat_dag(), {"question": "hi"})
    assert len(provider.requests[1].messages) == len(provider.requests[2].messages) == 2
    assert other.outputs["state"] == alone.outputs["state"] == Notes(turns=1, topics=["hi"])
    assert SQLiteStore(tmp_path).load("b").version == 1


async def test_a_fresh_engine_on_the_same_file_continues_the_session(tmp_path: Path) -> None:
    db = tmp_path / "state" / "sessions.db"
    first, _ = make_engine(db)
    async with first:
        await first.run(chat_dag(), {"question": "tea?"}, session_id="s")
    second, provider = make_engine(db)
    async with second:
        result = await second.run(chat_dag(), {"question": "more?"}, session_id="s")
    assert [m.get("content") for m in provider.requests[0].messages][1:3] == [
        "tea?",
        "re: tea? (2 messages)",
    ]
    assert result.outputs["state"] == Notes(turns=2, topics=["tea?", "more?"])


async def test_a_concurrent_run_of_a_held_session_is_refused_before_any_call(
    tmp_path: Path,
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(request: ChatRequest) -> str:
        started.set()
        await release.wait()
        return echo(request)

    engine, provider = make_engine(tmp_path, slow)
    async with engine:
        first = asyncio.ensure_future(engine.run(chat_dag(), {"question": "one"}, session_id="s"))
        await started.wait()
        with pytest.raises(SessionBusy, match="'s' is in use by another run") as caught:
            await engine.run(chat_dag(), {"question": "two"}, session_id="s")
        assert caught.value.session_id == "s"
        assert provider.calls == 1  # the refused run made no call
        other = asyncio.ensure_future(engine.run(chat_dag(), {"question": "x"}, session_id="t"))
        release.set()
        assert (await first).status == (await other).status == RunStatus.OK
        third = await engine.run(chat_dag(), {"question": "three"}, session_id="s")
    assert third.outputs["state"] == Notes(turns=2, topics=["one", "three"])


async def test_a_failed_run_saves_nothing_and_frees_the_session(tmp_path: Path) -> None:
    def failing(request: ChatRequest) -> str:
        raise ProviderHTTPError("bad request", status_code=400)

    engine, _ = make_engine(tmp_path, failing)
    async with engine:
        result = await engine.run(chat_dag(), {"question": "q"}, session_id="s")
    assert result.status == RunStatus.ERROR
    assert SQLiteStore(tmp_path).load("s").version == 0
    ok, _ = make_engine(tmp_path)
    async with ok:
        again = await ok.run(chat_dag(), {"question": "q"}, session_id="s")
    assert again.status == RunStatus.OK  # the lease was released, not left to expire


async def test_a_cancelled_run_frees_the_session(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def hang(request: ChatRequest) -> str:
        started.set()
        await asyncio.Event().wait()
        return ""

    engine, _ = make_engine(tmp_path, hang)
    async with engine:
        run = asyncio.ensure_future(engine.run(chat_dag(), {"question": "q"}, session_id="s"))
        await started.wait()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert SQLiteStore(tmp_path).acquire("s", "someone", 60.0).version == 0


async def test_keep_turns_bounds_the_stored_and_sent_history(tmp_path: Path) -> None:
    engine, provider = make_engine(tmp_path)
    async with engine:
        for n in range(5):
            await engine.run(chat_dag(keep_turns=2), {"question": f"q{n}"}, session_id="s")
    last_sent = [m.get("content") for m in provider.requests[-1].messages]
    assert last_sent[0] == "Be brief."
    assert [c for c in last_sent if isinstance(c, str) and c.startswith("q")] == ["q2", "q3", "q4"]
    stored = SQLiteStore(tmp_path).load("s").messages
    assert [m["role"] for m in stored] == ["user", "assistant"] * 2
    assert [stored[0]["content"], stored[2]["content"]] == ["q3", "q4"]


async def test_an_invalid_new_state_is_a_clear_error_and_saves_nothing(tmp_path: Path) -> None:
    dag = DAG("bad_state")
    dag.input("question")
    dag.session(user="question", answer="answer", state=Notes)
    dag.output(answer=dag.llm("fast", "{question}"), state={"turns": "many"})
    engine, _ = make_engine(tmp_path)
    async with engine:
        with pytest.raises(ConfigError, match="output 'state' is not a valid Notes"):
            await engine.run(dag, {"question": "q"}, session_id="s")
        assert SQLiteStore(tmp_path).load("s").version == 0
        fixed = DAG("bad_state")
        fixed.input("question")
        fixed.session(user="question", answer="answer", state=Notes)
        fixed.output(answer=fixed.llm("fast", "{question}"))
        result = await engine.run(fixed, {"question": "q"}, session_id="s")
    assert result.status == RunStatus.OK
    assert SQLiteStore(tmp_path).load("s").state_json is None  # no state output: kept as is


async def test_session_misuse_gets_config_errors_naming_the_fix(tmp_path: Path) -> None:
    plain = DAG("plain")
    plain.output(answer=plain.llm("fast", "{q}", q=plain.input("q")))
    async with Engine(sim_config(), store=tmp_path) as engine:
        with pytest.raises(ConfigError, match=r"has no session; declare dag.session"):
            await engine.run(plain, {"q": "x"}, session_id="s")
    async with Engine(sim_config()) as engine:
        with pytest.raises(ConfigError, match=r"no session store; pass Engine\(store="):
            await engine.run(chat_dag(), {"question": "x"}, session_id="s")
    dag = DAG("d")
    with pytest.raises(ConfigError, match=r"user='question' is not an input"):
        dag.session(user="question", answer="answer")
    dag.input("question")
    with pytest.raises(ConfigError, match="keep_turns must be a whole number"):
        dag.session(user="question", answer="answer", keep_turns=0)
    with pytest.raises(ConfigError, match="conversation=True needs a session"):
        dag.llm("fast", "{question}", conversation=True)

    class Strict(BaseModel):
        name: str

    with pytest.raises(ConfigError, match="needs a default for every field"):
        dag.session(user="question", answer="answer", state=Strict)
    dag.session(user="question", answer="reply")
    dag.output(answer=dag.llm("fast", "{question}", conversation=True))
    assert dag.inputs == ("question",)  # history and state are not the caller's to pass
    async with Engine(sim_config(), store=tmp_path) as engine:
        with pytest.raises(ConfigError, match=r"answer='reply' is not an output"):
            await engine.run(dag, {"question": "x"}, session_id="s")


async def test_the_data_dir_in_the_config_gives_the_engine_its_store(tmp_path: Path) -> None:
    config = sim_config().model_copy(update={"data_dir": str(tmp_path / "data")})
    async with Engine(config) as engine:
        await engine.run(chat_dag(), {"question": "q"}, session_id="s")
    assert SQLiteStore(tmp_path / "data" / "sessions.db").load("s").version == 1


def summarising(request: ChatRequest) -> str:
    """Summary calls answer with how many user lines they were given; others echo."""
    prompt = str(request.messages[-1].get("content"))
    if prompt.startswith("Summarise this conversation"):
        earlier = "earlier+" if "(earlier summary)" in prompt else ""
        return f"SUMMARY {earlier}{prompt.count(chr(10) + 'user: ')} turns"
    return echo(request)


def summary_dag_of(keep_turns: int) -> DAG:
    dag = DAG("chat")
    dag.input("question")
    dag.session(user="question", answer="answer", keep_turns=keep_turns, summarize="smart")
    dag.output(answer=dag.llm("fast", "{question}", conversation=True))
    return dag


async def test_summarize_folds_older_turns_into_one_traced_budgeted_summary(
    tmp_path: Path,
) -> None:
    spans = Spans()
    engine, provider = make_engine(tmp_path, summarising, spans)
    results = []
    async with engine:
        for n in range(5):
            dag = summary_dag_of(keep_turns=2)
            results.append(await engine.run(dag, {"question": f"q{n}"}, session_id="s"))
    summaries = [r for r in provider.requests if r.model == "sim-large"]
    assert len(summaries) == 2  # on the 3rd and the 5th turn: every keep_turns/2 turns
    assert "(earlier summary) SUMMARY 2 turns" in str(summaries[1].messages[-1].get("content"))
    stored = SQLiteStore(tmp_path).load("s").messages
    assert [(m["role"], m["content"]) for m in stored] == [
        ("system", "Summary of the earlier conversation: SUMMARY earlier+2 turns"),
        ("user", "q4"),
        ("assistant", "re: q4 (6 messages)"),  # sent: S, q2, a2, q3, a3, q4
    ]
    sent = provider.requests[-2].messages  # the 5th turn's own call, before its summary
    assert sent[0]["content"] == "Summary of the earlier conversation: SUMMARY 2 turns"
    # the summary call's cost is the run's: more than a run without one
    assert results[2].cost_usd > results[1].cost_usd > 0
    assert results[2].usage.input_tokens > results[3].usage.input_tokens / 2
    summary_runs = [row for row in spans.rows if row[:2] == ("session_summary", "run")]
    assert summary_runs == [("session_summary", "run", "ok")] * 2


async def test_a_summary_over_the_budget_drops_old_turns_instead(tmp_path: Path) -> None:
    spans = Spans()
    engine, provider = make_engine(tmp_path, summarising, spans)
    async with engine:
        for n in range(3):
            dag = summary_dag_of(keep_turns=2)
            await engine.run(dag, {"question": f"q{n}"}, session_id="s", budget_tokens=350)
    assert all(r.model == "sim-small" for r in provider.requests)  # no summary call was made
    summary_runs = [row for row in spans.rows if row[:2] == ("session_summary", "run")]
    assert summary_runs == [("session_summary", "run", "budget_exceeded")]  # it was refused
    stored = SQLiteStore(tmp_path).load("s").messages
    assert [m["content"] for m in stored if m["role"] == "user"] == ["q1", "q2"]


async def test_an_unknown_summary_alias_is_refused_before_any_call(tmp_path: Path) -> None:
    dag = DAG("chat")
    dag.input("question")
    dag.session(user="question", answer="answer", summarize="huge")
    dag.output(answer=dag.llm("fast", "{question}", conversation=True))
    engine, provider = make_engine(tmp_path)
    async with engine:
        with pytest.raises(ConfigError, match="model alias 'huge' is not configured"):
            await engine.run(dag, {"question": "q"}, session_id="s")
    assert provider.calls == 0
