"""Fixtures of the multi-node suite: two-node Ray clusters on loopback (see loopback.py).

Node roles: the head declares ``rollout_node`` and label ``role=rollout``, the worker
``learner_node`` and ``role=learner``; the config's placement keys pin actors to them.
"""
from __future__ import annotations

import pytest

from loopback import start_head

ROLLOUT_NODE = {"rollout_node": 2}
LEARNER_NODE = {"learner_node": 2}


def _two_nodes(num_cpus: float, dashboard: bool):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    cluster = start_head(num_cpus, ROLLOUT_NODE, {"role": "rollout"}, dashboard=dashboard)
    try:
        cluster.add_node(num_cpus, LEARNER_NODE, {"role": "learner"})
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def two_nodes():
    """Two 2-CPU nodes, no dashboard; this process is attached as a driver."""
    yield from _two_nodes(2, dashboard=False)


@pytest.fixture(scope="module")
def two_nodes_with_dashboard():
    """Two 1-CPU nodes and the head's dashboard (Ray Jobs needs it)."""
    yield from _two_nodes(1, dashboard=True)
