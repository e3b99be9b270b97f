"""VerifierPool: one Ray actor per configured verifier, each scoring whole batches.

Each actor reserves the resources its verifier declares (a GPU world model gets a GPU),
so Ray places them; the pool fans a batch out to all of them at once and stacks the
columns into the ``[n_samples, n_verifiers]`` score matrix (NaN = abstain).

Verifiers that need the current policy (``needs_policy``, e.g. ``go_likelihood``) get no
actor here: their column is computed by a rollout worker (which holds the current
weights) through ``score_policy_verifier``, and the pool slots it into place.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import ray

from softverify.config import VerifierSpec
from softverify.placement import actor_options
from softverify.types import Sample
from softverify.verifiers.base import composition_thresholds, verifier_class
from softverify.verifiers.suite import VerifierSuite, check_scores


class VerifierHost:
    """Holds one verifier as a one-spec :class:`VerifierSuite` (built from its spec with
    its threshold, scores checked against the contract) and returns its column."""

    def __init__(self, spec: VerifierSpec):
        self.suite = VerifierSuite([spec])

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        return self.suite.score(samples)[:, 0]


@ray.remote(max_restarts=3, max_task_retries=3)
class VerifierActor(VerifierHost):
    def ping(self) -> bool:
        return True

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


class VerifierPool:
    """Driver-side handle: owns the verifier actors and fans batches out to them."""

    def __init__(self, specs: Sequence[VerifierSpec]):
        self.specs = list(specs)
        self.names = [s.display_name for s in self.specs]
        #: thresholds for reward composition (None where the verifier applied its own)
        self.thresholds = composition_thresholds(self.specs)
        self.policy_specs = {j: s for j, s in enumerate(self.specs) if verifier_class(s.kind).needs_policy}
        self.actors = {
            j: VerifierActor.options(**actor_options(s.num_cpus, s.num_gpus, s.resources, s.node_labels)).remote(s)
            for j, s in enumerate(self.specs) if j not in self.policy_specs
        }
        ray.get([a.ping.remote() for a in self.actors.values()])

    def score(self, samples_ref, policy_worker=None) -> np.ndarray:
        """Scores for a batch (an ObjectRef or list of samples): ``[n, n_verifiers]``.

        ``policy_worker``: a RolloutWorker handle that scores the ``needs_policy``
        verifiers under its current weights; required when there are any."""
        if self.policy_specs and policy_worker is None:
            raise ValueError(f"verifiers {[s.display_name for s in self.policy_specs.values()]} need the policy: "
                             "pass policy_worker (a rollout worker)")
        refs = {j: a.score.remote(samples_ref) for j, a in self.actors.items()}
        refs.update({j: policy_worker.score_policy_verifier.remote(s, samples_ref)
                     for j, s in self.policy_specs.items()})
        cols = ray.get([refs[j] for j in range(len(self.specs))])
        for j in self.policy_specs:
            cols[j] = check_scores(self.names[j], cols[j], len(cols[j]))
        return np.column_stack(cols) if cols else np.zeros((0, 0))

    def node_ids(self) -> dict[str, str]:
        """Verifier name -> the node its actor runs on (policy verifiers run on worker 0)."""
        ids = ray.get([a.node_id.remote() for a in self.actors.values()])
        return {self.names[j]: n for j, n in zip(self.actors, ids)}

    def shutdown(self) -> None:
        for a in self.actors.values():
            ray.kill(a)
