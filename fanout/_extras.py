"""The optional dependencies: which extra brings which module, checked before use.

``pip install fanout`` runs pipelines and batch jobs; Ray, the service, the bench's
plots, SQL over traces and the emulator's HTTP server come with extras (see
pyproject.toml). A feature calls :func:`require` before it imports its module, so a
missing extra is one clear :class:`~fanout.errors.MissingExtra`, never an ImportError
from deep inside.
"""

from __future__ import annotations

import importlib.util

from fanout.errors import MissingExtra

__all__ = ["require"]


def require(feature: str, *modules: str, extra: str) -> None:
    """Raise :class:`MissingExtra` naming ``extra`` unless every module is importable."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a submodule's parent package is missing
            found = False
        if not found:
            raise MissingExtra(feature, extra=extra, module=module)
