"""``fanout run``'s exit codes: 0 only when some record succeeded, 2 for an input that
cannot work (one ``error:`` line, before any call), 4 when every record failed, a warning
for an empty input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import write_records
from typer.testing import CliRunner

from fanout.cli import app
from fanout.sim.server import EmulatorConfig, EmulatorServer

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = f"{ROOT / 'examples' / 'pipelines' / 'classify.py'}:dag"
EMU = """
[providers.emu]
kind = "openai"
base_url = "{base_url}"
api_key_env = "EMU_KEY"

[models.fast]
provider = "emu"
model = "sim-small"
"""


def binary(path: Path) -> Path:
    rng = random.Random(7)
    lines = (bytes(rng.randrange(128, 256) for _ in range(50)) for _ in range(78))
    path.write_bytes(b"\n".join(lines))
    return path


def parquet(path: Path, **columns: list[object]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def csv(path: Path) -> Path:
    path.write_text("id,body\nr1,hello\nr2,world\n", encoding="utf-8")
    return path


BAD_INPUTS = {
    "binary file as jsonl": (
        lambda tmp: binary(tmp / "photo.jsonl"), [],
        "the first 20 fail the same way, so the job stopped before any call",
    ),
    "parquet without the input column": (
        lambda tmp: parquet(tmp / "in.parquet", id=["a", "b"], body=["x", "y"]), [],
        "has no column 'text', which the DAG's inputs ['text'] need (its columns: id, body)",
    ),
    "csv without the input column": (
        lambda tmp: csv(tmp / "in.csv"), [], "has no column 'text'",
    ),
    "--key naming no parquet column": (
        lambda tmp: parquet(tmp / "in.parquet", id=["a"], text=["x"]), ["--key", "nosuch"],
        "--key nosuch: input file",
    ),
    "--key naming no jsonl field": (
        lambda tmp: write_records(tmp / "in.jsonl", 30), ["--key", "nosuch"],
        "no value in the key column 'nosuch'",
    ),
    "every record lacks the input": (
        lambda tmp: _lines(tmp / "in.jsonl", [{"id": i, "body": "x"} for i in range(5)]), [],
        "all 5 records fail the same way",
    ),
    "every record's input has the wrong type": (
        lambda tmp: _lines(tmp / "in.jsonl", [{"id": i, "text": i} for i in range(25)]), [],
        "input 'text' must be str",
    ),
}  # fmt: skip


def _lines(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_an_input_that_cannot_work_stops_before_any_call_with_exit_2(
    tmp_path: Path, case: str
) -> None:
    make, extra, expected = BAD_INPUTS[case]
    source = make(tmp_path)  # type: ignore[operator]
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", CLASSIFY, "-i", str(source), "-o", str(out), *extra]
    )
    assert result.exit_code == 2, (case, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, result.stderr)
    assert expected in lines[0], (case, lines[0])
    assert not out.exists(), "it stopped before writing (or calling) anything"


def test_a_bad_record_among_good_ones_is_an_error_row_and_the_job_exits_0(
    tmp_path: Path,
) -> None:
    records = [{"id": f"r{i}", "text": f"review {i}"} for i in range(30)]
    records[0] = {"id": "r0", "body": "no text"}  # the first one, even
    source = _lines(tmp_path / "in.jsonl", records)
    argv = ["run", CLASSIFY, "-i", str(source), "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "o" / "results").num_rows == 30


def test_an_empty_input_warns_and_exits_0(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["run", CLASSIFY, "-i", str(tmp_path / "empty.jsonl"), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "holds no records" in result.stderr


def test_a_job_in_which_every_record_failed_exits_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every call refused (a key the provider does not take): each record's own error, not
    # an outage (a provider failing every call with 5xx is down: its records would wait)
    monkeypatch.setenv("EMU_KEY", "sk-not-the-right-one-0000")
    source = write_records(tmp_path / "in.jsonl", 12)
    with EmulatorServer(EmulatorConfig(api_key="sk-the-right-one-1111")) as server:
        cfg = tmp_path / "emu.toml"
        cfg.write_text(EMU.format(base_url=server.base_url), encoding="utf-8")
        argv = ["run", CLASSIFY, "-i", str(source), "-o", str(tmp_path / "o"),
                "--config", str(cfg)]  # fmt: skip
        result = CliRunner().invoke(app, argv)
        resumed = CliRunner().invoke(app, argv)
    assert result.exit_code == 4, result.output
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "no record succeeded (12 error)" in error and "dead_letter" in error
    assert resumed.exit_code == 0  # nothing left to run: the earlier run's rows stand
