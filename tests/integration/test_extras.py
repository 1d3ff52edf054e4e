"""A command whose optional dependency is missing names the extra to install (exit 2).

The in-process tests hide a module (``sys.modules[name] = None`` makes it unimportable);
the slow test builds a real venv with ``pip install .`` and no extras.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fanout.cli import app

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = f"{ROOT / 'examples' / 'pipelines' / 'classify.py'}:dag"
REVIEWS = ROOT / "examples" / "data" / "reviews.jsonl"
MCP_AGENT = f"{ROOT / 'examples' / 'pipelines' / 'mcp_agent.py'}:dag"
MCP_CONFIG = str(ROOT / "examples" / "mcp" / "fanout.toml")
NOTES = ROOT / "examples" / "data" / "notes_tasks.jsonl"


def invoke_without(
    monkeypatch: pytest.MonkeyPatch, module: str, args: list[str]
) -> tuple[int, str]:
    monkeypatch.setitem(sys.modules, module, None)
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("module", "args", "extra"),
    [
        ("ray", ["run", CLASSIFY, "-i", str(REVIEWS), "-o", "OUT", "--ray", "local"], "ray"),
        ("fastapi", ["serve", CLASSIFY, "--no-auth"], "serve"),
        ("duckdb", ["traces", "summary", "TRACES"], "traces"),
        ("duckdb", ["traces", "list", "TRACES"], "traces"),
        ("uvicorn", ["sim-server", "--port", "0"], "sim"),
        ("matplotlib", ["bench", CLASSIFY, "--arrivals", "closed:1", "--report", "R"], "bench"),
        ("matplotlib", ["plan", CLASSIFY], "bench"),
        ("mcp", ["run", MCP_AGENT, "-i", str(NOTES), "-o", "OUT", "--config", MCP_CONFIG], "mcp"),
    ],
)
def test_a_missing_extra_is_one_error_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module: str, args: list[str], extra: str
) -> None:
    args = [str(tmp_path / a) if a in ("OUT", "TRACES", "R") else a for a in args]
    code, output = invoke_without(monkeypatch, module, args)
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert f"pip install 'fanout[{extra}]'" in lines[0]
    assert module in lines[0]
    assert not (tmp_path / "OUT").exists()  # refused before anything was written


def test_live_export_asked_for_without_the_otel_extra_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    args = ["run", CLASSIFY, "-i", str(REVIEWS), "-o", str(tmp_path / "OUT")]
    code, output = invoke_without(monkeypatch, "opentelemetry.sdk", args)
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "pip install 'fanout[otel]'" in lines[0]


def test_importing_a_package_whose_extra_is_missing_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from fanout.errors import MissingExtra\n"
        "try:\n"
        "    import fanout.distributed\n"
        "except MissingExtra as exc:\n"
        "    print(exc.extra, '|', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.startswith("ray | fanout.distributed (Ray) needs the 'ray' extra")


def test_the_core_import_loads_no_extra() -> None:
    heavy = ["ray", "fastapi", "uvicorn", "starlette", "duckdb", "matplotlib", "sse_starlette",
             "opentelemetry"]  # fmt: skip
    imported = f"[m for m in {heavy} if m in sys.modules]"
    code = f"import sys, fanout, fanout.batch, fanout.cli; print({imported})"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_core_install_runs_the_demo_and_refuses_ray_with_the_extra_named(
    tmp_path: Path,
) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    subprocess.run(
        [str(bin_dir / "pip"), "install", "-q", str(ROOT)], check=True, env=env, timeout=500
    )
    demo = subprocess.run(
        [str(bin_dir / "fanout"), "demo", "-o", str(tmp_path / "demo")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    assert "fanout run: triage" in demo.stdout
    ray = subprocess.run(
        [str(bin_dir / "fanout"), "run", CLASSIFY, "-i", str(REVIEWS),
         "-o", str(tmp_path / "out"), "--ray", "local"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert ray.returncode == 2
    assert ray.stderr.strip() == (
        "error: --ray needs the 'ray' extra (ray is not installed): pip install 'fanout[ray]'"
    )
