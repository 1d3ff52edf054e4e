"""``${VAR}`` in an MCP server's env and headers: read from this process's environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from fanout.errors import ConfigError

__all__ = ["expand_env"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(
    values: Mapping[str, str], *, where: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``values`` with each ``${VAR}`` replaced by the variable's value.

    A variable that is not set is a :class:`ConfigError` naming it (never a value).
    """
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for key, value in values.items():

        def sub(found: re.Match[str], key: str = key) -> str:
            name = found.group(1)
            if name not in env:
                raise ConfigError(
                    f"{where}: {key} reads the environment variable {name}, which is not set; "
                    f"export {name}=... before the run"
                )
            return env[name]

        out[key] = _VAR.sub(sub, value)
    return out
