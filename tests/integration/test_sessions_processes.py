"""Sessions across processes: a restart continues a session; two writers share one file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from fanout import DAG, Engine, SQLiteStore

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from fanout import DAG, Engine

    def chat() -> DAG:
        dag = DAG("chat")
        dag.input("question")
        dag.session(user="question", answer="answer")
        dag.output(answer=dag.llm("fast", "{question}", conversation=True))
        return dag

    async def main(db: str, session: str, turns: int) -> None:
        async with Engine(store=db) as engine:
            for n in range(turns):
                inputs = {"question": f"{session}-{n}"}
                result = await engine.run(chat(), inputs, session_id=session)
                assert str(result.status) == "ok", result.status
        print(json.dumps({"session": session, "turns": turns}))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def chat() -> DAG:
    dag = DAG("chat")
    dag.input("question")
    dag.session(user="question", answer="answer")
    dag.output(answer=dag.llm("fast", "{question}", conversation=True))
    return dag


def start(tmp_path: Path, db: Path, session: str, turns: int) -> subprocess.Popen[str]:
    script = tmp_path / "chat_turns.py"
    script.write_text(SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(script), str(db), session, str(turns)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    return dict(json.loads(out))


async def test_a_session_started_in_another_process_continues_here(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    finish(start(tmp_path, db, "s", 2))  # that process has exited: a restart
    async with Engine(store=db) as engine:
        result = await engine.run(chat(), {"question": "s-2"}, session_id="s")
    assert str(result.status) == "ok"
    record = SQLiteStore(db).load("s")
    assert record.version == 3
    assert [m["content"] for m in record.messages if m["role"] == "user"] == ["s-0", "s-1", "s-2"]


def test_two_processes_write_different_sessions_of_one_file_at_once(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    # neither process finds the file: both create the schema, the busy timeout orders them
    procs = [start(tmp_path, db, name, 15) for name in ("a", "b")]
    assert [finish(p)["session"] for p in procs] == ["a", "b"]
    store = SQLiteStore(db)
    for name in ("a", "b"):
        record = store.load(name)
        assert record.version == 15
        users = [m["content"] for m in record.messages if m["role"] == "user"]
        assert users == [f"{name}-{n}" for n in range(15)]
