"""Record readers: JSONL (and .gz), CSV and Parquet, keys, malformed rows, bad files."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fanout.batch import KeySet, Record, content_key, count_records, iter_records
from fanout.batch._readers import Shard, iter_shard, plan_shards
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
    records = list(iter_records(path, key="id"))

    assert [r.index for r in records] == [0, 1, 2, 3, 4]
    assert records[0] == Record("7", 0, {"id": 7, "text": "a"}, origin="in.jsonl:1")
    # a record without a value in the key column is an error record, keyed by content
    assert records[1].data is None and records[1].key == content_key({"text": "no id"})
    assert records[1].error is not None and "no value in the key column 'id'" in records[1].error
    assert records[2].data is None
    assert records[2].error is not None
    assert records[2].error.startswith("in.jsonl:4: not valid JSON")
    assert records[2].raw == "{not json"
    assert records[3].error == "in.jsonl:5: expected a JSON object per line, got list"
    assert records[4].ok
    assert records[4].data == {"id": "x", "text": "b"}


def test_content_keys_ignore_field_order_format_and_position(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"b": 1, "a": "x"}\n{"a": "y"}\n', encoding="utf-8")
    moved = tmp_path / "b.jsonl"
    moved.write_text('{"a": "y"}\n{ "a":"x",  "b":1 }\n', encoding="utf-8")
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"a": ["x"], "b": [1]}), parquet)

    first = [r.key for r in iter_records(jsonl)]
    assert len(set(first)) == 2
    assert [r.key for r in iter_records(moved)] == first[::-1]
    assert [r.key for r in iter_records(parquet)] == first[:1]
    assert first[0] == content_key({"a": "x", "b": 1})


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
    assert [r.key for r in iter_records(gz, key="id")] == ["a", "b"]
    assert [r.key for r in iter_records(nd)] == [content_key({"text": "three"})]


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
    records = list(iter_records(path, key="id"))

    assert records[0].key == "r1"
    assert records[0].data == {"id": "r1", "text": "hello, world"}
    assert records[1].error == "in.csv:row 2: has 1 fields, the header has 2"
    assert records[2].error is not None and "no value in the key column" in records[2].error
    assert [r.data for r in iter_records(path)][2] == {"id": "", "text": "no id"}


def test_folders_and_globs_read_every_supported_file_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jsonl").write_text('{"n": 1}\n{"n": 2}\n', encoding="utf-8")
    (folder / "sub" / "b.csv").write_text("n\n3\n", encoding="utf-8")
    pq.write_table(pa.table({"n": [4, 5]}), folder / "c.parquet")
    (folder / "notes.txt").write_text("skipped: not a record file\n", encoding="utf-8")
    (folder / "_hidden.jsonl").write_text('{"n": 99}\n', encoding="utf-8")

    assert [r.data for r in iter_records(folder)] == [
        {"n": 1},
        {"n": 2},
        {"n": 4},
        {"n": 5},
        {"n": "3"},  # sub/b.csv sorts after c.parquet; CSV values are text
    ]
    assert count_records(folder) == 5
    globbed = [r.data for r in iter_records(str(folder / "*.jsonl"))]
    assert globbed == [{"n": 99}, {"n": 1}, {"n": 2}]  # a glob takes what it names
    with pytest.raises(ConfigError, match="matches no file"):
        iter_records(str(tmp_path / "*.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        iter_records(tmp_path / "empty")


def test_dead_letter_lines_keep_their_key_and_a_fixed_raw_line_parses(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    lines = [
        {"text": "hi", "_fanout": {"key": "k1", "error_type": "Boom"}},
        {"_fanout": {"key": "k2", "raw": "{not json"}},
        {"_fanout": {"key": "k3", "raw": '{"text": "fixed"}'}},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    records = list(iter_records(path, key="id"))  # the kept key wins over the key column
    assert [r.key for r in records] == ["k1", "k2", "k3"]
    assert records[0].data == {"text": "hi"}
    assert records[1].data is None and records[1].raw == "{not json"
    assert records[2].data == {"text": "fixed"}


def test_key_set_membership() -> None:
    keys = KeySet.build([["a", "b"], [f"k{i}" for i in range(1000)]])
    assert len(keys) == 1002
    assert "a" in keys and "k999" in keys
    assert "c" not in keys and "k1000" not in keys
    assert 5 not in keys
    assert len(KeySet()) == 0 and "a" not in KeySet()
    more = keys.union(["a", "new"])
    assert len(more) == 1003 and "new" in more and "k5" in more and "new" not in keys


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
    records = list(iter_records(path, key="id"))
    assert len(records) == n
    assert count_records(path) == n
    assert records[-1] == Record(
        f"k{n - 1}", n - 1, {"id": f"k{n - 1}", "text": f"t{n - 1}"}, origin=f"in.parquet:row {n}"
    )


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


def _seen(records: list[Record]) -> list[tuple[str, str, str | None]]:
    return [(r.key, r.origin, r.error) for r in records]


@pytest.mark.parametrize("pieces", [1, 2, 3, 7, 40])
def test_byte_range_shards_read_every_line_once_with_its_line_number(
    tmp_path: Path, pieces: int
) -> None:
    lines = []
    for i in range(500):
        if i % 37 == 5:
            lines.append("")  # blank lines are no records
        elif i % 53 == 7:
            lines.append("{not json")  # malformed lines keep their line number
        else:
            lines.append(json.dumps({"id": i, "text": "x" * (i * 7 % 120)}))
    path = tmp_path / "in.jsonl"
    # CRLF line ends, and no line end after the last line
    path.write_bytes("\r\n".join(lines).encode("utf-8"))
    whole = list(iter_records(path))
    shards = plan_shards(path, pieces=pieces, min_bytes=100)

    assert len(shards) == pieces
    assert [s.index for s in shards] == list(range(pieces))
    assert [s.tag for s in shards][:2] == ["s00000", "s00001"][: len(shards)]
    assert _seen([r for s in shards for r in iter_shard(s)]) == _seen(whole)
    if pieces > 1:  # each shard starts mid-file and still numbers its lines from the top
        tail = list(iter_shard(shards[-1]))
        assert tail[-1].origin == f"in.jsonl:{len(lines)}"


def test_parquet_shards_are_row_groups_and_other_files_stay_whole(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    table = pa.table({"id": list(range(1000)), "text": [f"t{i}" for i in range(1000)]})
    pq.write_table(table, folder / "a.parquet", row_group_size=100)  # 10 row groups
    with gzip.open(folder / "b.jsonl.gz", "wt", encoding="utf-8") as out:
        out.writelines(json.dumps({"id": f"g{i}", "text": "t"}) + "\n" for i in range(300))
    (folder / "c.csv").write_text(
        "id,text\n" + "".join(f"c{i},t\n" for i in range(300)), encoding="utf-8"
    )
    shards = plan_shards(folder, pieces=8, min_bytes=1)

    by_file: dict[str, list[Shard]] = {}
    for shard in shards:
        by_file.setdefault(Path(shard.path).name, []).append(shard)
    assert [(s.start, s.stop) for s in by_file["b.jsonl.gz"]] == [(0, None)]  # not splittable
    assert [(s.start, s.stop) for s in by_file["c.csv"]] == [(0, None)]  # quoted line ends
    groups = [(s.start, s.stop) for s in by_file["a.parquet"]]
    assert len(groups) > 1 and groups[0][0] == 0 and groups[-1][1] == 10
    assert all(a[1] == b[0] for a, b in itertools.pairwise(groups))  # they tile
    got = _seen([r for s in shards for r in iter_shard(s, key="id")])
    assert got == _seen(list(iter_records(folder, key="id")))
    assert got[999][1] == "a.parquet:row 1000"


def test_shard_planning_refuses_what_reading_refuses(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        plan_shards(tmp_path / "missing.jsonl", pieces=4)
    (tmp_path / "in.jsonl").write_text("{}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="pieces must be at least 1"):
        plan_shards(tmp_path / "in.jsonl", pieces=0)
