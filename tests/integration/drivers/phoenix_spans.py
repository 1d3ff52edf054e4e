"""Runs in the Phoenix test venv (tests/support_venv.py), not the test's own: reads a
project's spans back through Phoenix's own client until ``count`` have arrived (Phoenix
inserts what it receives in batches) and writes them as JSON, attributes flattened.

``python phoenix_spans.py BASE_URL PROJECT COUNT RESULT_JSON``
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """``{"llm": {"cost": {"total": 1}}}`` -> ``{"llm.cost.total": 1}``; NaN (a column
    another span has and this one not) dropped."""
    if isinstance(value, dict):
        for key, inner in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif not (isinstance(value, float) and math.isnan(value)) and value is not None:
        out[prefix] = value


def main(base_url: str, project: str, count: str, result: str) -> None:
    from phoenix.client import Client

    client = Client(base_url=base_url)
    deadline = time.monotonic() + 60
    while True:
        frame = client.spans.get_spans_dataframe(project_identifier=project, limit=10_000)
        if len(frame) >= int(count) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    spans = []
    for span_id, row in frame.iterrows():
        fields: dict[str, Any] = {}
        flatten("", {k: v for k, v in row.items() if not k.startswith("attributes.")}, fields)
        attributes: dict[str, Any] = {}
        for column, value in row.items():
            if str(column).startswith("attributes."):
                flatten(str(column).removeprefix("attributes."), value, attributes)
        spans.append({"span_id": span_id, **fields, "attributes": attributes})
    projects = [p["name"] for p in client.projects.list()]
    report = {"projects": projects, "spans": spans}
    Path(result).write_text(json.dumps(report, indent=1, default=str), "utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
