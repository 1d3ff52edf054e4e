"""One real multi-node Ray cluster on loopback for the whole session (2 cores: never one per test).

A head and a second node, two logical CPUs each, as separate raylets
(``ray.cluster_utils.Cluster``); every test here connects to it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import ray
from ray.cluster_utils import Cluster


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Cluster]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback only: no token banner
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=2, resources={"second_node": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
