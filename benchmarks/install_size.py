"""What a newcomer's first command costs: the core install's size and ``import fanout`` time.

Builds a fresh venv with ``pip install .`` (no extras: what the README's first command
installs), then prints

  venv size            every byte under the venv (pip and setuptools included)
  import fanout        wall time of ``python -c "import fanout"``, median of --runs
                       (a new process each run; the import itself, not Python's start:
                       ``python -c pass`` is measured the same way and subtracted)
  fanout demo          exit code and wall time of the demo in that venv

Run: python benchmarks/install_size.py [--runs 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="build the venv here and keep it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fanout-install-"))
    env_dir = args.keep or work / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    try:
        venv.create(env_dir, with_pip=True, clear=True)
        python = str(env_dir / "bin" / "python")
        pip = [python, "-m", "pip", "install", "-q", "--no-cache-dir", str(ROOT)]
        start = time.perf_counter()
        subprocess.run(pip, check=True, env=env)
        install_s = time.perf_counter() - start
        size = tree_bytes(env_dir)
        for _ in range(3):  # warm the page cache: the figure is the import, not the disk
            timed([python, "-c", "import fanout"], env)
        bare = [timed([python, "-c", "pass"], env) for _ in range(args.runs)]
        imports = [timed([python, "-c", "import fanout"], env) for _ in range(args.runs)]
        start = time.perf_counter()
        demo = subprocess.run(
            [str(env_dir / "bin" / "fanout"), "demo", "-o", str(work / "demo")],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        demo_s = time.perf_counter() - start
        print(f"machine: {machine()}")
        print(f"pip install . (no extras): {install_s:.1f} s")
        print(f"venv size: {size / 2**20:,.0f} MiB ({size:,} bytes)")
        print(
            f"import fanout: {1000 * (statistics.median(imports) - statistics.median(bare)):.0f} ms"
            f" (median of {args.runs}; python -c pass {1000 * statistics.median(bare):.0f} ms, "
            f"python -c 'import fanout' {1000 * statistics.median(imports):.0f} ms)"
        )
        print(f"fanout demo: exit {demo.returncode} in {demo_s:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
