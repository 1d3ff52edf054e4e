"""A job's identity in its output directory: fingerprints of what produced its rows.

``OUTPUT/_fanout_job.json`` records the pipeline's name, the key column and one
fingerprint per node: a hash of everything that decides the node's output (its
prompt, model and fallbacks as configured, parameters, tools, output schema, the
source of its functions). A run into a directory that holds an earlier run of the
same job resumes it; one whose nodes differ is refused, naming them, unless the
caller asks to re-run (the earlier rows are then moved aside and every record runs
again; calls of unchanged nodes are answered from the call journal, unpaid).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pyarrow.parquet as pq
from pydantic import BaseModel

from fanout.batch._keys import KeySet
from fanout.batch._writer import DEAD_LETTER_DIR, RESULTS_DIR, ensure_dir, result_parts
from fanout.config import Config
from fanout.dag import (
    EmbedNode,
    InputNode,
    LLMNode,
    MapNode,
    Node,
    Plan,
    Ref,
    RouteNode,
    Template,
    ToolNode,
)
from fanout.errors import ConfigError
from fanout.run import Spend

__all__ = ["LOCK_FILE", "MANIFEST_FILE", "JobState", "fingerprint", "lock_job", "open_job"]

MANIFEST_FILE = "_fanout_job.json"
LOCK_FILE = ".fanout.lock"
SUPERSEDED_DIR = "_superseded"
_FORMAT = 1


def _callable_id(fn: object) -> str:
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    try:
        source = inspect.getsource(fn)  # type: ignore[arg-type]
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        source = code.co_code.hex() if code is not None else ""
    return f"{name}:{hashlib.sha256(source.encode()).hexdigest()[:16]}"


def _guard_id(fn: object) -> object:
    """A guard by identity, with the values it closes over (``max_prompt_chars(8000)``'s 8000)."""
    cells = getattr(fn, "__closure__", None) or ()
    return [_callable_id(fn), [_stable(cell.cell_contents) for cell in cells]]


def _stable(value: object) -> object:
    """A JSON-able, run-independent view of a node argument (no memory addresses)."""
    if isinstance(value, Ref):
        return {"ref": value.node_id}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_stable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _stable(v) for k, v in value.items()}
    if isinstance(value, Template):
        return {"template": value.source}
    if isinstance(value, type) and issubclass(value, BaseModel):
        return {"model": value.model_json_schema()}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if callable(value):
        return {"fn": _callable_id(value)}
    text = repr(value)
    return {"type": type(value).__qualname__, "repr": text if " at 0x" not in text else ""}


def _model_chain(alias: str, config: Config) -> list[object]:
    chain: list[object] = []
    seen: set[str] = set()
    pending = [alias]
    while pending:
        name = pending.pop(0)
        if name in seen or name not in config.models:
            continue
        seen.add(name)
        model = config.models[name]
        provider = config.providers.get(model.provider)
        chain.append(
            [
                name,
                getattr(provider, "kind", None),
                getattr(provider, "base_url", None),
                model.model,
            ]
        )
        pending.extend(model.fallbacks)
    return chain


def _spec(node: Node, config: Config) -> object:
    if isinstance(node, LLMNode):
        guards: dict[str, object] = {  # only when set: other nodes keep their fingerprints
            key: [_guard_id(g.fn) for g in found]
            for key, found in (("guards", node.guards), ("input_guards", node.input_guards))
            if found
        }
        if node.conversation:  # a session's history goes into its messages
            guards["conversation"] = True
        if node.mcp:  # the MCP servers and which of their tools the model sees
            guards["mcp"] = [[s.server, s.include, s.exclude, s.approval] for s in node.mcp]
        return guards | {
            "kind": "llm",
            "models": _model_chain(node.model, config),
            "prompt": _stable(node.prompt),
            "system": _stable(node.system),
            "bindings": _stable(dict(node.bindings)),
            "max_tokens": node.max_tokens,
            "temperature": node.temperature,
            "tools": [[t.spec.to_wire(), _stable(t.fn)] for t in node.tools],
            "max_steps": node.max_steps,
            "output": _stable(node.output),
            "max_output_retries": node.max_output_retries,
        }
    if isinstance(node, ToolNode):
        return {
            "kind": "tool",
            "fn": _callable_id(node.fn),
            "args": _stable(node.args),
            "kwargs": _stable(dict(node.kwargs)),
        }
    if isinstance(node, MapNode):
        return {
            "kind": "map",
            "body": _spec(node.body, config),
            "over": node.over.node_id,
            "on_item_error": node.on_item_error,
        }
    if isinstance(node, EmbedNode):
        return {
            "kind": "embed",
            "models": _model_chain(node.model, config),
            "text": _stable(node.text),
            "dimensions": node.dimensions,
        }
    if isinstance(node, RouteNode):
        return {
            "kind": "route",
            "fn": _callable_id(node.fn),
            "args": _stable(node.args),
            "branches": _stable(dict(node.branches)),
        }
    return {"kind": "input"}


def _hash(value: object) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(plan: Plan, config: Config, key: str | None) -> dict[str, object]:
    """What identifies a job's rows: pipeline, key column, a hash per node and the outputs."""
    return {
        "format": _FORMAT,
        "pipeline": plan.dag_name,
        "key": key,
        "nodes": {
            node_id: _hash(_spec(node, config))
            for node_id, node in sorted(plan.nodes.items())
            if not isinstance(node, InputNode)
        },
        "outputs": _hash(_stable(dict(plan.outputs))),
    }


@dataclass(frozen=True, slots=True)
class JobState:
    """What :func:`open_job` found: the keys already done (to skip), and how it decided;
    ``spent``: what earlier runs of the job spent (its call journal's account)."""

    done: KeySet
    resumed: bool
    superseded: Path | None = None  # where an earlier, different run's rows were moved
    spent: Spend = field(default_factory=Spend)


def _read_manifest(path: Path) -> dict[str, object] | None:
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _refuse(path.parent, f"its {MANIFEST_FILE} cannot be read ({exc})") from None
    if not isinstance(value, dict):
        raise _refuse(path.parent, f"its {MANIFEST_FILE} is not a JSON object")
    return value


def _refuse(directory: Path, why: str) -> ConfigError:
    return ConfigError(
        f"output {str(directory)!r} holds an earlier run, but {why}; pass "
        "--force-rerun-changed to run every record again (calls that did not change are "
        "answered from the call journal), or pick a new --output"
    )


def _differences(before: Mapping[str, object], now: Mapping[str, object]) -> str:
    parts: list[str] = []
    if before.get("pipeline") != now["pipeline"]:
        parts.append(f"it ran pipeline {before.get('pipeline')!r}, not {now['pipeline']!r}")
    if before.get("key") != now["key"]:
        was, new = before.get("key"), now["key"]
        parts.append(
            f"it keyed records by {'column ' + repr(was) if was else 'content'}, "
            f"not {'column ' + repr(new) if new else 'content'}"
        )
    old_nodes = before.get("nodes")
    new_nodes = now["nodes"]
    assert isinstance(new_nodes, dict)
    if isinstance(old_nodes, dict):
        changed = sorted(n for n in new_nodes if n in old_nodes and old_nodes[n] != new_nodes[n])
        added = sorted(set(new_nodes) - set(old_nodes))
        removed = sorted(set(old_nodes) - set(new_nodes))
        for what, names in (("changed", changed), ("added", added), ("removed", removed)):
            if names:
                parts.append(f"nodes {what} since: {', '.join(names)}")
    if before.get("outputs") != now["outputs"] and not parts:
        parts.append("the pipeline's outputs changed since")
    if before.get("format") != now["format"] and not parts:
        parts.append("it was written by another version of fanout")
    return "; ".join(parts)


def _done_keys(output_dir: Path) -> KeySet:
    return KeySet.build(
        pq.read_table(part, columns=["key"]).column("key").to_pylist()
        for part in result_parts(output_dir)
    )


def _move_aside(output_dir: Path) -> Path:
    target = output_dir / SUPERSEDED_DIR / time.strftime("%Y%m%dT%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for name in (RESULTS_DIR, DEAD_LETTER_DIR, MANIFEST_FILE):
        source = output_dir / name
        if source.exists():
            os.replace(source, target / name)
    return target


def lock_job(output_dir: str | Path) -> IO[str]:
    """Hold ``output_dir`` for one job: a second ``fanout run`` into it (which would write
    the same part numbers) is refused until this one ends. Close the file to release."""
    directory = ensure_dir(output_dir)
    handle = (directory / LOCK_FILE).open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(
            f"output {str(directory)!r} is in use by a running job ({holder}); wait for it "
            "to end, or pick another --output"
        ) from None
    with contextlib.suppress(OSError):
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}")
        handle.flush()
    return handle


def open_job(
    output_dir: str | Path,
    current: Mapping[str, object],
    *,
    resume: bool | None = None,
    force_rerun_changed: bool = False,
) -> JobState:
    """Decide how a job starts in ``output_dir`` and record ``current`` as its manifest.

    Fresh directory: a new job (``resume=True`` then is an error: nothing to resume).
    Same fingerprint: resume, skipping the keys that have rows. Another fingerprint
    with rows written: refused (a :class:`ConfigError` naming what changed) unless
    ``force_rerun_changed``, which moves those rows aside and starts again.
    """
    directory = ensure_dir(output_dir)
    manifest = directory / MANIFEST_FILE
    before = _read_manifest(manifest)
    has_rows = bool(result_parts(directory))
    if before is None and has_rows:
        raise _refuse(directory, f"it has no {MANIFEST_FILE} saying what produced its rows")
    if before is None and resume:
        raise ConfigError(
            f"nothing to resume in {str(directory)!r}: it holds no earlier run; "
            "drop --resume to start one"
        )
    why = _differences(before, current) if before is not None else ""
    if not why and before is not None:
        state = JobState(_done_keys(directory), resumed=True)
    elif why and has_rows:
        if not force_rerun_changed:
            raise _refuse(directory, why)
        state = JobState(KeySet(), resumed=False, superseded=_move_aside(directory))
    else:  # a new job, or an earlier one that wrote no row: nothing to keep
        state = JobState(KeySet(), resumed=False)
    tmp = manifest.with_name(f".{MANIFEST_FILE}.tmp")
    tmp.write_text(json.dumps(dict(current), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, manifest)
    return state
