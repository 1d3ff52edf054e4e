"""The progress line fits the terminal: count, rate and ETA always; the rest by priority."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from fanout.batch import JobStats
from fanout.cli._progress import ProgressLine


def snapshot(**changes: object) -> JobStats:
    fields: dict[str, object] = {
        "output_path": Path("out/results"),
        "records": 1195,
        "ok": 1190,
        "failed": {"error": 3, "waiting_for_review": 2},
        "input_tokens": 123_456,
        "output_tokens": 7_890,
        "cost_usd": 0.0123,
        "wall_time_s": 53.4,
        "total": 2000,
    }
    fields.update(changes)
    return JobStats(**fields)  # type: ignore[arg-type]


def render(line: ProgressLine, width: int) -> str:
    console = Console(width=width, record=True, force_terminal=True, color_system=None)
    console.print(line)
    return console.export_text()


def test_at_80_columns_the_count_rate_and_eta_are_visible() -> None:
    text = render(ProgressLine(snapshot()), 80)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == 1 and len(lines[0]) <= 80
    assert "1,195/2,000" in text
    assert "22.4/s" in text  # 1,195 records in 53.4 s
    assert "eta 0:35" in text  # 805 left at 22.4/s
    assert "errors 3" in text and "waiting for review 2" in text


def test_a_wide_terminal_shows_every_field_and_the_bar() -> None:
    line = ProgressLine(snapshot())
    head, bar, tail = line.fit(160)
    assert head == "records 1,195/2,000" and bar > 0
    for part in ("ok 1,190", "131,346 tok", "$0.0123", "0:53", "eta 0:35"):
        assert part in tail


def test_fields_go_by_priority_as_the_line_narrows() -> None:
    line = ProgressLine(snapshot())
    tails = {width: line.fit(width)[2] for width in (160, 100, 80, 60, 40)}
    assert "tok" in tails[160] and "tok" not in tails[100]  # tokens go first
    assert "ok 1,190" not in tails[60]
    assert tails[40] == "22.4/s · eta 0:35"  # the last fields standing
    assert line.fit(100)[1] > 0 and line.fit(80)[1] == 0  # the bar before errors, waiting


def test_records_waiting_for_review_are_not_errors() -> None:
    stats = snapshot(failed={"waiting_for_review": 4})
    assert (stats.errors, stats.waiting) == (0, 4)
    assert "errors 0" in ProgressLine(stats).plain()
    assert "waiting for review 4" in ProgressLine(stats).plain()


def test_without_a_total_there_is_no_bar_and_no_eta() -> None:
    head, bar, tail = ProgressLine(snapshot(total=None)).fit(160)
    assert (head, bar) == ("records 1,195", 0)
    assert "eta -" in tail


def _limit(granted: int) -> object:
    from fanout.limits import LimiterState

    return LimiterState("emu/m", 6000.0, None, 6000.0, None, 0, 0, granted, 0, 0.0, 0.0)


def test_the_rate_on_ray_is_over_the_limits_own_readings_not_the_snapshots() -> None:
    # Ray polls the limits once a second; snapshots come every half second. 100 calls/s:
    # readings at 10 s (1,000 granted) and 11 s (1,100), shown by snapshots at 11.4 and 11.9.
    first = snapshot(wall_time_s=11.4, limits=(_limit(1000),), limits_at_s=10.0)
    stale = snapshot(wall_time_s=11.9, limits=(_limit(1000),), limits_at_s=10.0)
    fresh = snapshot(wall_time_s=11.9, limits=(_limit(1100),), limits_at_s=11.0)
    assert "emu/m 6,000/6,000 rpm" in ProgressLine(fresh, first).plain()  # not 12,000
    assert "emu/m" not in ProgressLine(stale, first).plain()  # no new reading: no rate, not 0


def test_a_provider_that_is_down_leads_the_line_with_since_when_and_why() -> None:
    from datetime import UTC, datetime

    from fanout.run import Outage

    since = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    outage = Outage("emu/m", since, 185.0, "ProviderConnectionError: emu: connection failed")
    stats = snapshot(outages=(outage,))
    plain = ProgressLine(stats).plain()
    expected = f"emu/m DOWN since {since.astimezone():%H:%M:%S} (3:05, ProviderConnectionError)"
    assert expected in plain
    assert expected in render(ProgressLine(stats), 200)
    assert "DOWN" in render(ProgressLine(stats), 100)  # it is the last field to go


def test_a_job_on_a_cluster_says_which_and_how_many_workers() -> None:
    stats = snapshot(where="the Ray cluster at 127.0.0.1:6380, 4 workers")
    assert "on the Ray cluster at 127.0.0.1:6380, 4 workers" in ProgressLine(stats).plain()
    assert " on " not in ProgressLine(snapshot(where="this process")).plain()


def test_batch_mode_shows_batches_by_state_and_lines_answered() -> None:
    from fanout.batch import BatchStats

    batches = BatchStats({"in_progress": 2, "completed": 1}, 40_000, 100_000, 1_234)
    plain = ProgressLine(snapshot(batches=batches)).plain()
    assert "batches 1 completed 2 in_progress" in plain
    assert "lines 40,000/100,000" in plain
    assert "queued 1,234" in plain
    wide = render(ProgressLine(snapshot(batches=batches)), 200)
    assert "batches 1 completed 2 in_progress" in wide
    assert "batches" not in ProgressLine(snapshot()).plain()
