"""CI runs exactly the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command() -> None:
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert "pytest" in command and "mkdocs build --strict" in command
    readme_lines = (ROOT / "README.md").read_text().splitlines()
    assert command in readme_lines, "the README's test command and .ci/run's differ"
