"""Joining or starting the Ray cluster a job runs on: ``--ray local|auto|ADDRESS``."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

import ray

from fanout.errors import ConfigError

__all__ = ["ensure_ray"]

_log = logging.getLogger(__name__)


def ensure_ray(address: str = "local", *, num_cpus: int | None = None) -> str:
    """See :func:`_connect`; the process keeps its own SIGTERM/SIGINT handlers (``ray.init``
    installs ones that exit at once, which would skip writing results and traces)."""
    saved = {}
    if threading.current_thread() is threading.main_thread():
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _connect(address, num_cpus=num_cpus)
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def _connect(address: str, *, num_cpus: int | None) -> str:
    """Connect this process to Ray; returns a description of the cluster joined.

    ``local`` starts an embedded single-node Ray, whatever ``RAY_ADDRESS`` says; ``auto``
    joins the cluster ``RAY_ADDRESS`` names or ``ray start`` left on this machine, and
    starts a local one only when there is none: a cluster found but not joined (nothing
    answers there, or it refuses this driver) is a :class:`ConfigError` naming the fix,
    never a silent local run. Anything else is the address of a running cluster
    (``HOST:PORT`` or ``ray://HOST:PORT``). A process already connected stays on its
    cluster.
    """
    if ray.is_initialized():
        return "the Ray cluster this process is already connected to"
    common = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == "local":
        ray.init(address="local", num_cpus=num_cpus, **common)  # type: ignore[arg-type]
        return "a local Ray instance"
    if address == "auto":
        found, source = find_cluster()
        if found is None:
            _log.info("no running Ray cluster found; starting a local one")
            ray.init(address="local", num_cpus=num_cpus, **common)  # type: ignore[arg-type]
            return "a local Ray instance (no running cluster was found)"
        _check_reachable(found, source)
        _join(found, f"--ray auto found the Ray cluster at {found} ({source})", common)
        return f"the Ray cluster at {found}"
    _join(address, f"--ray {address}", common)
    return f"the Ray cluster at {address}"


def find_cluster() -> tuple[str | None, str]:
    """The cluster ``--ray auto`` joins, and where it was named: ``RAY_ADDRESS``, else the
    one the last ``ray start`` on this machine recorded; ``(None, "")``: none."""
    named = os.environ.get("RAY_ADDRESS", "").strip()
    if named:
        return named, "RAY_ADDRESS"
    from ray._private.utils import read_ray_address  # the file `ray start` writes

    recorded = read_ray_address()
    if recorded:
        return recorded, "the cluster `ray start` left running on this machine"
    return None, ""


_FIX = (
    "if the cluster uses token auth (cluster/local.sh does), export what it printed: "
    "export $(cluster/local.sh up); or pass --ray local to run on a Ray of this process"
)


def _check_reachable(address: str, source: str) -> None:
    """A quick look: Ray itself waits a minute or more on an address nothing answers."""
    if "://" in address:
        return  # a Ray client address: ray.init says what is wrong
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2.0):
            return
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--ray auto found the Ray cluster at {address} ({source}), but nothing answers "
            f"there ({exc}); start it, fix or unset RAY_ADDRESS, or pass --ray local"
        ) from None


def _join(address: str, what: str, common: dict[str, bool]) -> None:
    try:
        ray.init(address=address, **common)  # type: ignore[arg-type]
    except Exception as exc:  # ConnectionError, an auth refusal, a bad address: all say why
        detail = " ".join(str(exc).split())[:300]
        hint = "check the address (HOST:PORT of the head's GCS, or ray://HOST:10001); "
        raise ConfigError(f"{what}, but cannot join it ({type(exc).__name__}: {detail}); "
                          f"{hint}{_FIX}") from None  # fmt: skip
