"""The Ray backend: worker actors, cluster-wide rate limits by leases, Ray tasks for CPU tools.

The only package that imports Ray. ``RayEngine`` offers the same ``run`` as
:class:`fanout.Engine`, so batch jobs (``fanout run --ray ...``) and services use
either.
"""

from fanout._extras import require

require("fanout.distributed (Ray)", "ray", extra="ray")

from fanout.distributed._cluster import ensure_ray  # noqa: E402  (after the extra's check)
from fanout.distributed._coordinator import QuotaCoordinator  # noqa: E402
from fanout.distributed._engine import PoolStats, RayEngine  # noqa: E402
from fanout.distributed._worker import FanoutWorker, ray_cpu_runner  # noqa: E402

__all__ = [
    "FanoutWorker",
    "PoolStats",
    "QuotaCoordinator",
    "RayEngine",
    "ensure_ray",
    "ray_cpu_runner",
]
