"""``load_pipeline``: find the DAG a ``path/to/file.py:attr`` or ``module.name:attr`` spec names."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, TracebackType

from fanout.dag import DAG
from fanout.errors import ConfigError

__all__ = ["load_pipeline"]

_FORM = "'path/to/file.py:attr' or 'module.name:attr' (e.g. 'examples/pipelines/classify.py:dag')"
_FANOUT_ROOT = str(Path(__file__).resolve().parent.parent) + os.sep
_counter = itertools.count(1)


def load_pipeline(spec: str) -> DAG:
    """The :class:`DAG` named by ``spec``: ``path/to/file.py:attr`` or ``module.name:attr``.

    A file is imported under a fresh module name with its folder on ``sys.path``
    (so it can import its siblings); a module is imported with the current
    directory on ``sys.path``. Every failure (no such file or module, an error
    while importing, no such attribute, not a DAG) raises :class:`ConfigError`
    naming the spec and the fix.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(f"pipeline {spec!r}: expected the form {_FORM}")
    parts = attr.split(".")
    if not all(part.isidentifier() for part in parts):
        raise ConfigError(
            f"pipeline {spec!r}: {attr!r} is not a Python attribute name; expected the form {_FORM}"
        )
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    module = _import_file(spec, Path(target)) if is_file else _import_module(spec, target)
    value: object = module
    for depth, part in enumerate(parts):
        if not hasattr(value, part):
            owner = target if depth == 0 else ".".join(parts[:depth])
            raise ConfigError(
                f"pipeline {spec!r}: {owner} has no attribute {part!r}; "
                f"{_dags_hint(module, target)}"
            )
        value = getattr(value, part)
    if not isinstance(value, DAG):
        hint = (
            "; if it builds one, assign the result at module level (dag = build())"
            if callable(value)
            else ""
        )
        raise ConfigError(
            f"pipeline {spec!r}: {attr!r} is not a fanout DAG (its type is "
            f"{type(value).__name__}){hint}; "
            f"{_dags_hint(module, target)}"
        )
    return value


def _dags_hint(module: ModuleType, target: str) -> str:
    names = [name for name, value in vars(module).items() if isinstance(value, DAG)]
    if names:
        return f"DAGs defined in {target}: {', '.join(names)}"
    return f"{target} defines no DAG at module level"


@contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _import_file(spec: str, path: Path) -> ModuleType:
    if not path.exists():
        raise ConfigError(f"pipeline {spec!r}: file {str(path)!r} does not exist; check the path")
    if not path.is_file() or path.suffix != ".py":
        raise ConfigError(f"pipeline {spec!r}: {str(path)!r} is not a Python file (.py)")
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_fanout_pipeline_{stem}_{next(_counter)}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"pipeline {spec!r}: cannot import {str(path)!r} as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before running it, as a normal import would: dataclasses and
    # pydantic models defined in the file look their module up in sys.modules.
    sys.modules[name] = module
    try:
        with _on_sys_path(path.resolve().parent):
            module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise _import_failed(spec, str(path), exc) from None
    return module


def _import_module(spec: str, target: str) -> ModuleType:
    try:
        with _on_sys_path(Path.cwd()):
            return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise ConfigError(
                f"pipeline {spec!r}: no module named {exc.name!r}; give a file path "
                f"(path/to/file.py:attr) or a module importable from the current directory"
            ) from None
        raise _import_failed(spec, target, exc) from None
    except Exception as exc:
        raise _import_failed(spec, target, exc) from None


def _import_failed(spec: str, what: str, exc: Exception) -> ConfigError:
    if isinstance(exc, SyntaxError):
        line = f"{exc.filename}:{exc.lineno}" if exc.filename else what
        return ConfigError(f"pipeline {spec!r}: syntax error at {line}: {exc.msg}; fix the file")
    where = _user_frame(exc.__traceback__)
    at = f" at {where}" if where else ""
    if isinstance(exc, ConfigError):
        return ConfigError(f"pipeline {spec!r}: building the DAG failed{at}: {exc}")
    return ConfigError(
        f"pipeline {spec!r}: importing {what} raised {type(exc).__name__}{at}: {exc}"
    )


def _user_frame(tb: TracebackType | None) -> str | None:
    """The innermost frame of the user's code (outside fanout and importlib), as file:line."""
    found: str | None = None
    for frame in traceback.extract_tb(tb):
        name = frame.filename
        if name.startswith(("<frozen", _FANOUT_ROOT)):
            continue
        found = f"{name}:{frame.lineno}"
    return found
