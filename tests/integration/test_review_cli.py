"""Human review across processes: a run pauses here, `fanout review approve --resume`
finishes it in a new process, and the provider emulator proves no call was repeated."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Emulator, emulator_process

from fanout import Engine, RunStatus
from fanout.batch import load_pipeline
from fanout.config import load_config
from fanout.store import ReviewStore

PIPELINE = textwrap.dedent(
    """
    from fanout import DAG

    dag = DAG("reviewed")
    topic = dag.input("topic")
    draft = dag.llm("fast", "Write a line about {topic}.", name="draft")
    checked = dag.review(draft, instructions="Is it polite?", name="check")
    final = dag.llm("fast", "Polish: {checked}", name="final", checked=checked)
    other = dag.llm("fast", "Summarise {topic}.", name="other")
    dag.output(final=final, other=other, checked=checked)
    """
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with emulator_process("--record-prompts") as emu:
        yield emu


def setup(tmp_path: Path, emulator: Emulator) -> tuple[Path, Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "data"
    config = tmp_path / "fanout.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            data_dir = "{data}"
            [providers.emu]
            kind = "openai"
            base_url = "{emulator.base_url}"
            [models.fast]
            provider = "emu"
            model = "sim-small"
            """
        )
    )
    pipeline = tmp_path / "reviewed.py"
    pipeline.write_text(PIPELINE)
    return data, config, pipeline


async def pause(tmp_path: Path, emulator: Emulator) -> tuple[Path, Path, str, str]:
    data, config, pipeline = setup(tmp_path, emulator)
    emulator.reset()
    async with Engine(load_config(config)) as engine:
        result = await engine.run(load_pipeline(f"{pipeline}:dag"), {"topic": "tea"})
    assert result.status is RunStatus.WAITING_FOR_REVIEW
    assert emulator.stats()["accepted"] == 2  # draft and other; final waits
    (review_id,) = result.reviews
    return config, data, f"{pipeline}:dag", review_id


def fanout(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanout", *args], capture_output=True, text=True, timeout=120
    )


async def test_approve_resumes_in_a_new_process_with_no_repeated_call(
    tmp_path: Path, emulator: Emulator
) -> None:
    config, data, pipeline, review_id = await pause(tmp_path, emulator)
    listed = fanout("review", "list", "--config", str(config), "--status", "pending")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["review_id"] for line in listed.stdout.splitlines()] == [review_id]

    done = fanout(
        "review", "approve", review_id, "--config", str(config), "--by", "ann", "--resume", pipeline
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ok", result
    assert result["nodes"]["draft"]["calls"] == 0 and result["nodes"]["other"]["calls"] == 0
    assert result["nodes"]["final"]["calls"] == 1
    assert emulator.stats()["accepted"] == 3  # only final was called, in the new process
    assert all(count == 1 for count in emulator.prompts().values())  # no prompt sent twice
    review = ReviewStore(data).get(review_id)
    assert (review.status, review.decided_by) == ("approved", "ann")


async def test_edit_and_reject_through_the_cli(tmp_path: Path, emulator: Emulator) -> None:
    config, _, pipeline, review_id = await pause(tmp_path / "edit", emulator)
    edited = fanout(
        "review", "edit", review_id, "--value", '"a kinder line"', "--config", str(config),
        "--resume", pipeline,
    )
    assert edited.returncode == 0, edited.stderr
    result = json.loads(edited.stdout)
    assert (result["status"], result["outputs"]["checked"]) == ("ok", "a kinder line")

    config, data, pipeline, review_id = await pause(tmp_path / "reject", emulator)
    rejected = fanout("review", "reject", review_id, "--reason", "rude", "--config", str(config))
    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(rejected.stdout)["status"] == "rejected"
    resumed = fanout("review", "resume", review_id, pipeline, "--data-dir", str(data))
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["status"] == "error"
    assert result["nodes"]["check"]["error_type"] == "ReviewRejected"
    assert emulator.stats()["accepted"] == 2  # nothing more was called


async def test_bad_review_commands_exit_2_with_one_error_line(
    tmp_path: Path, emulator: Emulator
) -> None:
    config, data, pipeline, review_id = await pause(tmp_path, emulator)
    cases = [
        (("review", "show", "nope", "--data-dir", str(data)), "no review 'nope'"),
        (("review", "approve", "nope", "--config", str(config)), "no review 'nope'"),
        (("review", "edit", review_id, "--value", "not json", "--data-dir", str(data)), "JSON"),
        (("review", "list"), "--data-dir"),
        (("review", "list", "--data-dir", str(tmp_path / "missing")), "does not exist"),
        (("review", "list", "--data-dir", str(data), "--status", "maybe"), "review status"),
        (("review", "resume", review_id, pipeline, "--data-dir", str(data)), "still pending"),
        (("review", "resume", review_id, "x.py:dag", "--data-dir", str(data)), "x.py"),
    ]
    for args, message in cases:
        out = fanout(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, out.stderr)
        assert message in lines[0], (args, lines[0])
    approved = fanout("review", "approve", review_id, "--data-dir", str(data))
    assert approved.returncode == 0
    again = fanout("review", "reject", review_id, "--data-dir", str(data))
    assert again.returncode == 2 and "already approved" in again.stderr
