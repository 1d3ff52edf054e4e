"""Joining or starting the Ray cluster a job runs on: ``--ray local|auto|ADDRESS``."""

from __future__ import annotations

import logging
import os
import signal
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

    ``local`` starts an embedded single-node Ray; ``auto`` joins ``RAY_ADDRESS`` or the
    cluster ``ray start`` left on this machine, else starts a local one; anything else
    is the address of a running cluster (``HOST:PORT`` or ``ray://HOST:PORT``). A
    process already connected stays on its cluster.
    """
    if ray.is_initialized():
        return "the Ray cluster this process is already connected to"
    common = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == "local":
        ray.init(num_cpus=num_cpus, **common)  # type: ignore[arg-type]
        return "a local Ray instance"
    if address == "auto":
        try:
            ray.init(address="auto", **common)  # type: ignore[arg-type]
            return f"the Ray cluster at {os.environ.get('RAY_ADDRESS', 'this machine')}"
        except ConnectionError:
            _log.info("no running Ray cluster found; starting a local one")
            ray.init(num_cpus=num_cpus, **common)  # type: ignore[arg-type]
            return "a local Ray instance (no running cluster was found)"
    try:
        ray.init(address=address, **common)  # type: ignore[arg-type]
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"--ray {address}: cannot join that Ray cluster ({exc}); check the address "
            "(HOST:PORT of the head's GCS, or ray://HOST:10001), or use --ray local"
        ) from None
    return f"the Ray cluster at {address}"
