"""Every example in README.md and docs/ runs here, so a broken snippet fails CI.

Sybil parses the Markdown files; each becomes a pytest file whose items are its blocks:

- a ```` ```python ```` block is executed as written, in a namespace of its own (a reader
  copies one block, not the page), with the working directory a fresh temporary one per
  Markdown file that holds a copy of ``examples/``;
- a ```` ```toml ```` block is validated as a whole config with
  ``fanout.config.parse_config``; one preceded by ``<!-- toml: fragment -->`` is merged
  onto ``examples/fanout.toml`` first (a ``[models.fast.hedge]`` table alone, say);
- ``<!-- skip: next "reason" -->`` before a block skips it, visibly, with that reason; it
  is only for blocks that need what CI cannot have (a real vendor key);
- a block that reads ``FANOUT_GATEWAY_URL`` (or ``FANOUT_SERVICE_URL``) gets a running
  ``fanout serve`` (in a thread, once per session): ``examples/fanout.toml`` plus the
  ``gpt-4o-mini`` alias on its simulated provider, the ``map_reduce`` pipeline, and a
  virtual key in ``FANOUT_API_KEY`` (what ``fanout serve ... --keys-db`` and
  ``fanout keys create`` give a reader).

Other blocks (bash, console output, SQL) are shown, not run. The session ends with a
line that counts what ran.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sybil import Document, Example, Region, Sybil
from sybil.integration.pytest import SybilFile, SybilItem
from sybil.parsers.markdown import CodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

from fanout.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FRAGMENT = "<!-- toml: fragment -->"

COUNTS: Counter[str] = Counter()


def sources() -> list[Path]:
    """The Markdown files whose examples run: the README and every page of the site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


# -- evaluators ---------------------------------------------------------------------------


def run_python(example: Example) -> None:
    if "FANOUT_GATEWAY_URL" in str(example.parsed) or "FANOUT_SERVICE_URL" in str(example.parsed):
        start_gateway()
    source = "\n" * (example.line + example.parsed.line_offset) + str(example.parsed)
    code = compile(source, example.path, "exec", dont_inherit=True)
    exec(code, {"__name__": "__main__"})  # a fresh module namespace per block
    COUNTS["python"] += 1


def validate_toml(example: Example) -> None:
    fragment, text = example.parsed
    data = tomllib.loads(text)
    if fragment:
        data = _merge(tomllib.loads((EXAMPLES / "fanout.toml").read_text()), data)
    parse_config(data, source=f"{Path(example.path).name}:{example.line}")
    COUNTS["toml"] += 1


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class TomlParser:
    """```` ```toml ```` blocks; a block right after ``<!-- toml: fragment -->`` is a fragment."""

    def __init__(self) -> None:
        self.lexer = FencedCodeBlockLexer("toml")

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in self.lexer(document):
            before = document.text[: region.start].rstrip()
            fragment = before.endswith(FRAGMENT)
            region.parsed = (fragment, str(region.lexemes["source"]))
            region.evaluator = validate_toml
            yield region


class ReasonedSkipParser(SkipParser):
    """``<!-- skip: next "reason" -->``; a skip without its reason is an error (a bare one
    would pass silently, uncounted)."""

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in super().__call__(document):
            action, reason = region.parsed
            if action in ("start", "next") and not reason:
                line = document.text.count("\n", 0, region.start) + 1
                raise ValueError(
                    f"{document.path}:{line}: 'skip: {action}' needs a reason, e.g. "
                    '<!-- skip: next "needs OPENAI_API_KEY" -->'
                )
            yield region


# -- a running gateway, for the blocks that call one --------------------------------------

_GATEWAY: list[Any] = []  # the server, once started


def start_gateway() -> None:
    """``fanout serve`` as docs/service.md starts it, in this process (once)."""
    if _GATEWAY:
        return
    from fanout.batch import load_pipeline
    from fanout.run import Engine
    from fanout.service import ServiceServer, build_app
    from fanout.store import KeyStore

    data = tomllib.loads((EXAMPLES / "fanout.toml").read_text())
    data["models"]["gpt-4o-mini"] = {"provider": "sim", "model": "sim-small"}
    engine = Engine(parse_config(data, source="docs gateway"))
    dag = load_pipeline(str(EXAMPLES / "pipelines" / "map_reduce.py") + ":dag")
    keys = KeyStore(Path(tempfile.mkdtemp(prefix="fanout-docs-keys-")) / "keys.db")
    _, key = keys.create("docs", budget_usd=5.0, period="day")
    server = ServiceServer(
        lambda: build_app({dag.name: dag}, engine, tokens=None, keys=keys),
        close=engine.aclose,
    ).start()
    _GATEWAY.append(server)
    os.environ["FANOUT_SERVICE_URL"] = server.url
    os.environ["FANOUT_GATEWAY_URL"] = f"{server.url}/v1"
    os.environ["FANOUT_API_KEY"] = key


def pytest_sessionfinish() -> None:
    for server in _GATEWAY:
        server.stop()


# -- a fresh working directory per Markdown file ----------------------------------------


def enter_workdir(namespace: dict[str, Any]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fanout-docs-"))
    shutil.copytree(EXAMPLES, workdir / "examples")
    namespace["_workdir"] = workdir
    namespace["_cwd"] = os.getcwd()
    os.chdir(workdir)


def leave_workdir(namespace: dict[str, Any]) -> None:
    os.chdir(namespace["_cwd"])
    shutil.rmtree(namespace["_workdir"], ignore_errors=True)


DOCS = Sybil(
    parsers=[
        CodeBlockParser(language="python", evaluator=run_python),
        TomlParser(),
        ReasonedSkipParser(),
    ],
    setup=enter_workdir,
    teardown=leave_workdir,
    path=str(ROOT),
)


# -- collection: README.md and docs/ live outside tests/, so this directory brings them in --


class DocSources(pytest.File):
    """Stands for this conftest; its children are the Markdown files, one SybilFile each."""

    def collect(self) -> Iterator[SybilFile]:
        for path in sources():
            yield SybilFile.from_parent(self, path=path, sybils=[DOCS])


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> DocSources | None:
    if file_path == Path(__file__):
        return DocSources.from_parent(parent, path=file_path)
    return None


# -- the count --------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    COUNTS["collected"] = sum(isinstance(item, SybilItem) for item in items)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # (Per-item hooks of this conftest do not see the Markdown files' items, which live
    # outside this directory; the reporter's stats do.)
    if COUNTS["collected"]:
        skipped = [r for r in terminalreporter.stats.get("skipped", []) if ".md::" in r.nodeid]
        terminalreporter.write_line(
            f"doc examples: {COUNTS['python']} python blocks run, "
            f"{COUNTS['toml']} toml blocks validated, {len(skipped)} skipped"
        )
