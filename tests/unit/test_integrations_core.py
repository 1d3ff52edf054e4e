"""The integrations' framework-free parts: lazy imports, the missing-extra error, summaries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fanout.batch import JobStats
from fanout.integrations._summary import progress_line, summary, summary_markdown


def test_import_fanout_and_the_host_need_no_framework() -> None:
    code = (
        "import sys, fanout, fanout.integrations\n"
        "bad = [m for m in ('langchain_core', 'llama_index', 'haystack', 'prefect') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_missing_framework_names_its_extra() -> None:
    code = (
        "import sys; sys.modules['prefect'] = None\n"  # as if not installed
        "from fanout.errors import MissingExtra\n"
        "try:\n    import fanout.integrations.prefect\n"
        "except MissingExtra as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert "fanout[prefect]" in out.stdout


def test_summary_of_a_resumed_job() -> None:
    stats = JobStats(
        Path("out/results"), records=15, ok=14, failed={"error": 1}, skipped=15, total=30,
        resumed=True, cost_usd=0.25, spent_before_usd=0.5,
    )  # fmt: skip
    values = summary(stats, attempt=2)
    assert values["attempt"] == 2 and values["resumed"] is True and values["skipped"] == 15
    assert values["total_cost_usd"] == 0.75
    assert progress_line(stats).startswith("fanout: 30/30 records · ok 14 · errors 1")
    assert "| resumed | True |" in summary_markdown(stats, attempt=2)
