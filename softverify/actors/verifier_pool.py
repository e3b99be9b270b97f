"""VerifierPool: Ray actors hosting the configured verifiers, each scoring whole batches.

A verifier that reserves something (CPUs, a GPU for a world model, custom resources, node
labels) gets its own actor with that reservation, so Ray places it. Verifiers that reserve
nothing (the default: label lookups, format and length checks, small world models) share
one host actor: each actor is a Python process that imports torch and Ray (~2.5 s of CPU and
~280 MB here), and three of them for three lookups cost a 2-core machine several seconds per
run for nothing. The pool fans a batch out to all hosts at once and stacks the columns into
the ``[n_samples, n_verifiers]`` score matrix (NaN = abstain).

Verifiers that need the current policy (``needs_policy``, e.g. ``go_likelihood``) get no
actor here: their column is computed by a rollout worker (which holds the current
weights) through ``score_policy_verifier``, and the pool slots it into place.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import ray

from softverify.actors.group import ActorGroup
from softverify.config import VerifierSpec
from softverify.infra.placement import actor_options
from softverify.types import Sample
from softverify.verifiers.base import composition_thresholds, keeps_metrics, verifier_class
from softverify.verifiers.suite import VerifierSuite, check_scores


class VerifierHost:
    """Holds verifiers as one :class:`VerifierSuite` (built from their specs with their
    thresholds, scores checked against the contract) and returns their columns."""

    def __init__(self, specs: Sequence[VerifierSpec]):
        from softverify.infra import quiet

        quiet.in_actor()  # a quiet run: world models' library chatter off, as in every actor
        self.suite = VerifierSuite(list(specs))

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        return self.suite.score(samples)

    def metrics(self) -> dict[str, float]:
        return self.suite.metrics()


@ray.remote(max_restarts=3, max_task_retries=3)
class VerifierActor(VerifierHost):
    def ping(self) -> bool:
        return True

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


def reserves_nothing(spec: VerifierSpec) -> bool:
    """No CPUs, GPUs, custom resources or node labels: Ray need not place it anywhere special."""
    p = spec.placement
    return not (p.num_cpus or p.num_gpus or p.resources or p.node_labels)


def host_groups(specs: Sequence[VerifierSpec], policy: set[int]) -> list[list[int]]:
    """Which verifiers share an actor: all that reserve nothing in one host (first), every
    other one alone with its own reservation; ``policy`` indices get none."""
    shared = [j for j, s in enumerate(specs) if j not in policy and reserves_nothing(s)]
    alone = [[j] for j, s in enumerate(specs) if j not in policy and not reserves_nothing(s)]
    return ([shared] if shared else []) + alone


class VerifierPool:
    """Driver-side handle: owns the verifier host actors and fans batches out to them."""

    def __init__(self, specs: Sequence[VerifierSpec]):
        self.specs = list(specs)
        self.names = [s.display_name for s in self.specs]
        #: thresholds for reward composition (None where the verifier applied its own)
        self.thresholds = composition_thresholds(self.specs)
        self.policy_specs = {j: s for j, s in enumerate(self.specs) if verifier_class(s.kind).needs_policy}
        #: (actor, the verifier indices it hosts, in its columns' order)
        self.hosts = []
        for group in host_groups(self.specs, set(self.policy_specs)):
            first = self.specs[group[0]]  # a shared group reserves nothing; a lone one, its own
            opts = actor_options(first.placement)
            self.hosts.append((VerifierActor.options(**opts).remote([self.specs[j] for j in group]), group))
        #: verifier index -> the actor hosting it (verifiers sharing a host map to the same actor)
        self.actors = {j: a for a, group in self.hosts for j in group}
        #: the host actors, in ``hosts``' order
        self.host_actors = ActorGroup(a for a, _ in self.hosts)
        self.host_actors.run("ping")

    def score(self, samples_ref, policy_worker=None) -> np.ndarray:
        """Scores for a batch (an ObjectRef or list of samples): ``[n, n_verifiers]``.

        ``policy_worker``: a RolloutWorker handle that scores the ``needs_policy``
        verifiers under its current weights; required when there are any."""
        if self.policy_specs and policy_worker is None:
            raise ValueError(f"verifiers {[s.display_name for s in self.policy_specs.values()]} need the policy: "
                             "pass policy_worker (a rollout worker)")
        host_refs = self.host_actors.call("score", samples_ref)
        policy_refs = {j: policy_worker.score_policy_verifier.remote(s, samples_ref)
                       for j, s in self.policy_specs.items()}
        cols: list = [None] * len(self.specs)
        for (_, group), m in zip(self.hosts, ray.get(host_refs)):
            for c, j in enumerate(group):
                cols[j] = m[:, c]
        for j, ref in policy_refs.items():
            col = ray.get(ref)
            cols[j] = check_scores(self.names[j], col, len(col))
        return np.column_stack(cols) if cols else np.zeros((0, 0))

    def metrics(self) -> dict[str, float]:
        """The hosted verifiers' counters (``Verifier.metrics``, e.g. a remote verifier's failed
        requests) as ``verifier/<name>/<key>``; hosts whose kinds keep none are not asked."""
        asked = ActorGroup(a for a, group in self.hosts if any(keeps_metrics(self.specs[j].kind) for j in group))
        out: dict[str, float] = {}
        for m in asked.run("metrics"):
            out.update({f"verifier/{k}": v for k, v in m.items()})
        return out

    def node_ids(self) -> dict[str, str]:
        """Verifier name -> the node its actor runs on (policy verifiers run on worker 0)."""
        ids = self.host_actors.run("node_id")
        return {self.names[j]: n for (_, group), n in zip(self.hosts, ids) for j in group}

    def shutdown(self) -> None:
        self.host_actors.kill()
