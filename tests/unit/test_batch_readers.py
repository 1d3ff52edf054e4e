"""Record readers: JSONL (and .gz), CSV and Parquet, keys, malformed rows, bad files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fanout.batch import Record, iter_records
from fanout.errors import ConfigError


def test_jsonl_keys_rows_and_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": 7, "text": "a"}\n'
        "\n"  # blank lines are skipped and do not count as rows
        '{"text": "no id"}\n'
        "{not json\n"
        "[1, 2]\n"
        '{"id": "x", "text": "b"}\n',
        encoding="utf-8",
    )
    records = list(iter_records(path))

    assert [r.key for r in records] == ["7", "1", "2", "3", "x"]
    assert [r.index for r in records] == [0, 1, 2, 3, 4]
    assert records[0] == Record("7", 0, {"id": 7, "text": "a"})
    assert records[2].data is None
    assert records[2].error is not None
    assert records[2].error.startswith("row 2 (line 4): not valid JSON")
    assert records[3].error == "row 3 (line 5): expected a JSON object per line, got list"
    assert records[4].ok
    assert records[4].data == {"id": "x", "text": "b"}


def test_gzipped_jsonl_and_ndjson(tmp_path: Path) -> None:
    gz = tmp_path / "in.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as out:
        out.write('{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n')
    nd = tmp_path / "in.ndjson"
    nd.write_text('{"text": "three"}\n', encoding="utf-8")

    assert [r.data for r in iter_records(gz)] == [
        {"id": "a", "text": "one"},
        {"id": "b", "text": "two"},
    ]
    assert [r.key for r in iter_records(nd)] == ["0"]


def test_bad_utf8_line_is_an_error_record(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n{"text": "after"}\n')
    records = list(iter_records(path))
    assert [r.ok for r in records] == [True, False, True]
    assert records[1].error is not None
    assert "UTF-8" in records[1].error


def test_csv_rows_with_wrong_field_count_become_errors(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,text\nr1,"hello, world"\nr2\n,no id\n', encoding="utf-8")
    records = list(iter_records(path))

    assert [r.key for r in records] == ["r1", "1", "2"]
    assert records[0].data == {"id": "r1", "text": "hello, world"}
    assert records[1].error == "row 1: has 1 fields, the header has 2"
    assert records[2].data == {"id": "", "text": "no id"}


def test_csv_header_with_repeated_names_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("text,text\na,b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="repeated column names"):
        iter_records(path)


def test_parquet_streams_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    n = 2500  # more than one reader batch
    pq.write_table(
        pa.table({"id": [f"k{i}" for i in range(n)], "text": [f"t{i}" for i in range(n)]}),
        path,
        row_group_size=1000,
    )
    records = list(iter_records(path))
    assert len(records) == n
    assert records[-1] == Record(f"k{n - 1}", n - 1, {"id": f"k{n - 1}", "text": f"t{n - 1}"})


def test_missing_file_unknown_extension_and_json_array(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'.*nope\.jsonl' does not exist"):
        iter_records(tmp_path / "nope.jsonl")

    txt = tmp_path / "in.txt"
    txt.write_text("hello\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"in\.txt'?: unknown extension; supported: \.jsonl"):
        iter_records(txt)

    array = tmp_path / "in.json"
    array.write_text(json.dumps([{"text": "a"}]), encoding="utf-8")
    with pytest.raises(ConfigError, match="holds a JSON array; fanout reads JSON Lines"):
        iter_records(array)

    fake = tmp_path / "in.parquet"
    fake.write_text("not parquet", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a readable Parquet file"):
        iter_records(fake)


def test_an_unstarted_csv_stream_closes_its_file(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("text\na\n", encoding="utf-8")
    records = iter_records(path)
    close = getattr(records, "close", None)
    assert close is not None
    close()  # no ResourceWarning (warnings are errors here)
    with pytest.raises(StopIteration):
        next(records)
