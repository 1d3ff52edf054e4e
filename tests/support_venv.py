"""A separate, cached virtual environment for a test whose dependency cannot live in the
test venv (Prefect pins fastapi and websockets below fanout's service stack; Phoenix is
a server of its own).

The venv is built once under ``~/.cache/fanout-tests/NAME-KEY`` (``FANOUT_TEST_VENVS``
moves it), ``KEY`` a hash of what it holds: the Python, the requirements and, for a
venv that installs this checkout (``{repo}``), its path and ``pyproject.toml``. A build
that did not finish leaves no ``ready`` marker and is redone. When pip cannot reach the
package registry the test is skipped, saying so; any other pip failure fails it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# what pip prints when the index cannot be reached (no route, no DNS, a proxy refusing)
_OFFLINE = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Connection refused",
    "ProxyError",
)


def venvs_dir() -> Path:
    return Path(os.environ.get("FANOUT_TEST_VENVS", Path.home() / ".cache" / "fanout-tests"))


def cached_venv(name: str, requirements: list[str]) -> Path:
    """The venv ``name`` with ``requirements`` installed (``{repo}`` in one is this
    repository's path); its ``bin/`` directory. Built on first use, reused after."""
    reqs = [r.format(repo=ROOT) for r in requirements]
    parts = [sys.version, *reqs]
    if any("{repo}" in r for r in requirements):  # this checkout, as its pyproject has it
        parts.append((ROOT / "pyproject.toml").read_text("utf-8"))
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    path = venvs_dir() / f"{name}-{digest.hexdigest()[:12]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{name}.lock", "w") as lock:  # one build at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "ready").exists():
            _build(path, reqs)
    return path / "bin"


def _build(path: Path, reqs: list[str]) -> None:
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q"]
    done = subprocess.run([*pip, *reqs], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(path, ignore_errors=True)
        out = done.stdout + done.stderr
        if any(sign in out for sign in _OFFLINE):
            pytest.skip(f"pip cannot reach the package registry to install {reqs}")
        raise AssertionError(f"pip install {reqs} failed:\n{out[-4000:]}")
    (path / "ready").write_text(" ".join(reqs) + "\n", "utf-8")
