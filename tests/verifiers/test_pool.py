"""VerifierPool on a real local Ray cluster: CPU actors per verifier, and the
needs-policy column computed by a rollout worker holding the tiny policy."""
from __future__ import annotations

import numpy as np
import pytest
import ray
from _vtools import completion, sample

from softverify.config import ModelConfig, RolloutConfig, VerifierSpec

pytestmark = pytest.mark.timeout(600)


def test_pool_routes_policy_verifier_to_rollout_worker(ray_cluster, tiny_model_dir, kb_params):
    from softverify.actors.rollout import RolloutWorker
    from softverify.actors.verifier_pool import VerifierPool
    from softverify.engines.base import SamplingParams

    specs = [VerifierSpec(kind="go_likelihood", params=kb_params, weight=0.5), VerifierSpec(kind="hard", threshold=0.4)]
    pool = VerifierPool(specs)
    assert set(pool.actors) == {1} and set(pool.policy_specs) == {0}
    assert pool.thresholds == [None, 0.4]
    worker = RolloutWorker.remote(str(tiny_model_dir), ModelConfig(path=str(tiny_model_dir)), RolloutConfig())
    rows = [{"question": "Are CD3D and CD3E likely to be co-expressed in PBMC cells?", "pert": "CD3D", "gene": "CD3E",
             "label": 1, "task": "coexpression"}]
    samples = ray.get(worker.generate.remote(rows, 3, SamplingParams(max_new_tokens=5, seed=1)))
    for s in samples[:2]:  # make two of them answer, by hand
        s.completion = completion("yes" if s is samples[0] else "no", "CD3D and CD3E")
    ref = ray.put(samples)
    scores = pool.score(ref, policy_worker=worker)
    assert scores.shape == (3, 2)
    assert list(scores[:, 1]) == [1.0, 0.0, 0.0]
    assert ((scores[:, 0] > 0) & (scores[:, 0] < 1)).all()  # likelihood under the tiny policy
    with pytest.raises(ValueError, match="need the policy"):
        pool.score(ref)
    pool.shutdown()


def test_verifiers_that_reserve_nothing_share_one_host():
    """Default verifiers (no CPUs, GPUs, resources, labels) share one actor process; any
    reservation gets its own actor; policy verifiers get none."""
    from softverify.actors.verifier_pool import host_groups

    specs = [VerifierSpec(kind="hard"), VerifierSpec(kind="format"),
             VerifierSpec(kind="length", placement={"num_cpus": 0.5}), VerifierSpec(kind="go_likelihood", name="lik"),
             VerifierSpec(kind="hard", name="h2", placement={"node_labels": {"a": "b"}}),
             VerifierSpec(kind="length", name="l2")]
    assert host_groups(specs, policy={3}) == [[0, 1, 5], [2], [4]]
    assert host_groups(specs[:2], policy=set()) == [[0, 1]]
    assert host_groups([specs[2]], policy=set()) == [[0]]
    assert host_groups([specs[3]], policy={0}) == []
