"""How the learner's new weights reach the rollout workers: one interface, one class per
``learner.sync_method`` (NeMo-RL's ``create_weight_synchronizer`` is the model).

- :class:`ObjectStoreSync`: learner rank 0 puts its state dict (in ``learner.sync_dtype``,
  the trained tensors only with ``learner.partial_sync``) into Ray's object store once and
  every worker loads it from there. The handle stays valid, so a worker Ray restarts catches
  up from it on its next call (:class:`~softverify.types.PolicyWeights` travels with each).
- :class:`CollectiveSync`: rank 0 and every worker form one broadcast group at start-up
  (NCCL GPU to GPU, else gloo; :mod:`softverify.sync.collective`) and each sync is one
  broadcast, with no object-store copy. A worker Ray restarted has left the group: refused
  by name rather than left sampling from its initial weights.

The actors' ends stay where the state lives: ``LearnerGroup.sync_ref`` /
``broadcast_refs`` on the learner side, ``RolloutWorker.load_weights`` /
``join_broadcast`` / ``receive_weights`` on the worker side.
"""
from __future__ import annotations

from typing import Sequence

import ray

from softverify.actors.group import ActorGroup
from softverify.types import PolicyWeights


class WeightSync:
    """Push the learner group's current weights to every rollout worker."""

    def __init__(self, learners, workers: Sequence, partial: bool):
        self.learners, self.workers, self.partial = learners, ActorGroup(workers), partial

    def start(self) -> None:
        """Once, after the actors exist and before the first sync."""

    def push(self, version: int) -> tuple[PolicyWeights, int]:
        """Ship the weights of trainer step ``version`` to every worker and wait for them:
        the handle later calls carry, and the bytes shipped."""
        raise NotImplementedError


class ObjectStoreSync(WeightSync):
    def push(self, version: int) -> tuple[PolicyWeights, int]:
        ref, nbytes = self.learners.sync_ref(trainable_only=self.partial)
        self.workers.run("load_weights", ref, version, self.partial)
        return PolicyWeights(version, ref, self.partial), nbytes


class CollectiveSync(WeightSync):
    def __init__(self, learners, workers: Sequence, partial: bool, worker_gpus: float):
        super().__init__(learners, workers, partial)
        self.worker_gpus = worker_gpus

    def start(self) -> None:
        """Rank 0 plus every rollout worker, joined at once (the store waits for all); NCCL
        when rank 0 and the workers hold whole GPUs, else gloo."""
        from softverify.sync.collective import broadcast_backend

        backend = broadcast_backend(self.learners.cfg.learner.placement.num_gpus, self.worker_gpus)
        rank0 = self.learners.actors[0]
        addr, port = ray.get(rank0.rendezvous.remote())
        world = 1 + len(self.workers)
        ray.get([rank0.join_broadcast.remote(world, addr, port, backend)]
                + self.workers.call_split("join_broadcast", range(1, world), world=world, addr=addr, port=port,
                                          backend=backend))

    def push(self, version: int) -> tuple[PolicyWeights, int]:
        out = [i for i, ok in enumerate(self.workers.run("in_broadcast_group")) if not ok]
        if out:
            raise RuntimeError(f"rollout worker(s) {out} restarted and left the weight-broadcast group "
                               "(learner.sync_method=collective); re-run with --resume, or use "
                               "learner.sync_method=object_store to survive worker restarts")
        sent = self.learners.broadcast_refs(self.partial)
        self.workers.run("receive_weights", version, self.partial)
        # no object-store copy: a worker that falls behind says so (RolloutCore._ensure_weights)
        return PolicyWeights(version, None, self.partial), int(ray.get(sent)[0])


def make_weight_sync(cfg, learners, workers: Sequence) -> WeightSync:
    """The run's weight sync (``learner.sync_method``, ``learner.partial_sync``)."""
    lc = cfg.learner
    if lc.sync_method == "collective":
        return CollectiveSync(learners, workers, lc.partial_sync, cfg.rollout.placement.num_gpus)
    return ObjectStoreSync(learners, workers, lc.partial_sync)
