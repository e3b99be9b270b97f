"""LearnerGroup: N DeepSpeed ranks as Ray actors forming one process group.

gloo on CPU, NCCL when ranks hold GPUs. Every collective call (train step, state dict
under ZeRO-3, checkpoint save/load) is issued to all ranks at once through their
:class:`~softverify.actors.group.ActorGroup`; results from rank 0 carry the full state.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import ray

from softverify.actors.group import ActorGroup
from softverify.algo import mode_for
from softverify.infra.cluster import free_port
from softverify.config import LearnerConfig, TrainConfig
from softverify.learner.microbatch import balanced_shards
from softverify.infra.placement import actor_options
from softverify.infra.procmem import minor_faults, reserve_heap, retain_freed_memory
from softverify.types import Sample

# torch-backed modules (softverify.learner.rank, softverify.sync.wire) are imported inside the
# actor's methods: this module is also the driver's, which never needs torch (1-1.5 s of CPU
# and ~180 MB in a process that only builds batches).


@ray.remote(num_cpus=0)
def _split(samples: list[Sample], shards: list[list[int]]):
    """The batch cut into the ranks' shards (one return value per rank)."""
    parts = tuple([samples[i] for i in idx] for idx in shards)
    return parts[0] if len(parts) == 1 else parts


def prepare_rank_memory(lc: LearnerConfig) -> tuple[bool, int]:
    """A rank process's memory policy, applied before anything is allocated (the rank's actor
    calls it; so does ``benchmarks/learner_step.py``, whose ranks must start alike):
    ``learner.retain_freed_memory``, then ``learner.reserve_memory_gb`` (the heap the updates
    will use, mapped now rather than during them). Returns (whether freed memory is
    retained, the page faults the reservation took)."""
    retains = lc.retain_freed_memory and retain_freed_memory()
    return retains, reserve_heap(int(lc.reserve_memory_gb * 2**30)) if retains else 0


@ray.remote
class LearnerActor:
    """One rank. Built in two calls because the process group's address is rank 0's node,
    known only once Ray has placed rank 0 (on a multi-node cluster it need not be the
    driver's): ``rendezvous()`` on rank 0, then ``start(addr, port)`` on every rank."""

    def __init__(self, cfg: TrainConfig, model_path: str, rank: int, world: int):
        from softverify.infra import quiet

        quiet.in_actor()  # a quiet run: before DeepSpeed's import-time accelerator warning
        self.args = (cfg, model_path, rank, world)
        self.rank = rank
        # before the model and DeepSpeed allocate anything: the rank's process is ours
        self.retains_memory, self.reserve_faults = prepare_rank_memory(cfg.learner)

    def rendezvous(self) -> tuple[str, int]:
        """This node's address and a port free on it, for the group's TCP store."""
        return ray.util.get_node_ip_address(), free_port()

    def start(self, addr: str, port: int) -> bool:
        from softverify.infra import quiet
        from softverify.learner.rank import Learner

        quiet.in_actor("transformers")  # its loading and saving bars off before the model loads
        self.learner = Learner(*self.args, addr, port)
        return True

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def train_step(self, samples: list[Sample], values: np.ndarray, total_tokens: int, total_seqs: int) -> dict:
        """This rank's shard of the step (its samples and what the mode trains on per sample) only; ``rank_s`` in
        the result is the seconds the update took inside the rank (the rest of the trainer's
        learn phase is shipping the batch and collecting results), ``learn_page_faults_sum`` the
        minor page faults it took (``learner.retain_freed_memory`` brings them to ~0)."""
        from softverify.learner.rank import LearnBatch

        t, f = time.perf_counter(), minor_faults()
        out = self.learner.train_step(LearnBatch(samples, np.asarray(values), total_tokens, total_seqs))
        out["rank_s"] = time.perf_counter() - t
        out["learn_page_faults_sum"] = float(minor_faults() - f)
        return out

    def state_dict(self, trainable_only: bool = False):
        return self.learner.state_dict(trainable_only)

    @ray.method(num_returns=2)
    def sync_state(self, trainable_only: bool, sync_dtype: str):
        """What a weight sync ships (rank 0's state dict in ``learner.sync_dtype``, in the
        object store's zero-copy wire form; None on the other ranks) and its size in bytes, as
        two objects: the driver reads the size without fetching the weights."""
        from softverify.sync.wire import cast_for_sync, state_bytes, to_wire

        sd = self.learner.state_dict(trainable_only, copy=False)  # serialised at return, before any next step
        if sd is None:
            return None, 0
        wire = to_wire(cast_for_sync(sd, sync_dtype))
        return wire, state_bytes(wire)

    def logprobs(self, samples: list[Sample]) -> list[list[float]]:
        return self.learner.logprobs(samples)

    def join_broadcast(self, world: int, addr: str, port: int, backend: str) -> bool:
        """Rank 0 hosts the weight-broadcast group (``learner.sync_method=collective``)."""
        from softverify.sync.collective import WeightBroadcaster

        device = self.learner.device if backend == "nccl" else "cpu"
        self.broadcaster = WeightBroadcaster(0, world, addr, port, backend=backend, device=device)
        return True

    def broadcast_weights(self, trainable_only: bool, sync_dtype: str) -> int:
        """Every rank calls it (ZeRO-3 gathers the state); rank 0 broadcasts it in
        ``sync_dtype`` to the rollout workers and returns the bytes sent (other ranks: 0)."""
        from softverify.sync.wire import cast_for_sync

        # on the broadcast's device, sharing the parameters' memory (read at once, before any
        # step): NCCL sends straight from the GPU, gloo from host memory
        b = getattr(self, "broadcaster", None)  # rank 0 only; the others just join ZeRO-3's gather
        sd = self.learner.state_dict(trainable_only, copy=False, device=b.device if b is not None else "cpu")
        if sd is None:
            return 0
        return self.broadcaster.send(cast_for_sync(sd, sync_dtype))

    def save_checkpoint(self, directory: str, tag: str, hf_dir: str | None) -> bool:
        self.learner.save_checkpoint(directory, tag, hf_dir)
        return True

    def save_hf(self, hf_dir: str) -> bool:
        self.learner.save_hf(hf_dir)
        return True

    def load_checkpoint(self, directory: str, tag: str) -> int:
        self.learner.load_checkpoint(directory, tag)
        return self.learner.steps_done


def rank_options(lc: LearnerConfig) -> dict:
    """``LearnerActor.options(...)`` for one rank of ``lc``: its resources and
    placement, and with ``learner.huge_page_alloc`` torch's huge-page allocation switched on in
    the rank's environment (torch reads THP_MEM_ALLOC_ENABLE once, at its first allocation, so
    it must be there when the process starts; Ray merges these env_vars into the job's)."""
    opts = actor_options(lc.placement)
    if lc.huge_page_alloc:
        opts["runtime_env"] = {"env_vars": {"THP_MEM_ALLOC_ENABLE": "1"}}
    return opts


class LearnerGroup:
    def __init__(self, cfg: TrainConfig, model_path: str):
        lc = cfg.learner
        self.world = lc.num_ranks
        self.cfg = cfg
        opts = rank_options(lc)
        #: the ranks, rank r at index r
        self.actors = ActorGroup(LearnerActor.options(**opts).remote(cfg, model_path, r, self.world)
                                 for r in range(self.world))
        addr, port = ray.get(self.actors[0].rendezvous.remote())
        # every rank joins at once (init_distributed blocks until the whole world is there);
        # the calls return when the Learners are built, and a rank's failure surfaces here
        self.actors.run("start", addr, port)
        self.zero3 = lc.zero_stage == 3
        self.mode = mode_for(cfg)

    def node_ids(self) -> list[str]:
        return self.actors.run("node_id")

    def shards(self, n: int, lengths: Sequence[int]) -> list[list[int]]:
        """Which of the step's ``n`` samples each rank trains on: units of the training mode's
        ``shard_unit`` (:mod:`softverify.algo`), balanced by the samples' completion
        ``lengths`` (:func:`softverify.learner.microbatch.balanced_shards`)."""
        unit = self.mode.shard_unit(n, self.world)
        return balanced_shards([1 + int(x) for x in lengths], unit, self.world)

    def launch_train_step(self, samples_ref, values: np.ndarray, n: int, total_tokens: int,
                          lengths: Sequence[int]) -> list:
        """Start one update on every rank and return at once (the ranks' result refs): the
        trainer rolls out the next batch meanwhile (``algorithm.max_staleness``); :meth:`collect`
        waits for it. ``lengths``: the samples' completion lengths, to balance the ranks."""
        shards = self.shards(n, lengths)
        # one ref per rank: a zero-CPU task beside the batch splits it, so each rank fetches
        # its shard, not the whole step (the object store moves 1x the batch, not world x)
        parts = _split.options(num_returns=self.world).remote(samples_ref, shards)
        parts = [parts] if self.world == 1 else parts
        vals = np.asarray(values)
        return self.actors.call_split("train_step", parts, [vals[s] for s in shards], total_tokens=total_tokens,
                                      total_seqs=n)

    def collect(self, refs: list) -> dict[str, float]:
        """The step's metrics from the ranks' results: ``_sum`` keys added up, the rest averaged;
        ``time/learn_rank_s``: the slowest rank's seconds inside its update."""
        results = ray.get(refs)
        out = {"time/learn_rank_s": max(r.pop("rank_s", 0.0) for r in results)}  # the slowest rank's own update
        keys = set().union(*results)
        for k in keys:
            vals = [r[k] for r in results if k in r]
            out[k.removesuffix("_sum")] = float(np.sum(vals)) if k.endswith("_sum") else float(np.mean(vals))
        if out.get("learn_encoded_tokens"):  # the share of the forward passes spent on padding
            out["learn_pad_frac"] = 1.0 - out["learn_real_tokens"] / out["learn_encoded_tokens"]
        return out

    def sync_ref(self, trainable_only: bool = False) -> tuple:
        """What a weight sync ships: ObjectRef of rank 0's state dict in ``learner.sync_dtype``
        (all ranks called: ZeRO-3 gathers), and its size in bytes."""
        pairs = self.actors.call("sync_state", trainable_only, self.cfg.learner.sync_dtype)
        if self.zero3:
            ray.wait([p[0] for p in pairs], num_returns=len(pairs))
        ref, nbytes = pairs[0]
        return ref, int(ray.get(nbytes))

    def broadcast_refs(self, trainable_only: bool) -> list:
        """Start a collective sync on every rank (rank 0 sends); refs of the bytes sent."""
        return self.actors.call("broadcast_weights", trainable_only, self.cfg.learner.sync_dtype)

    def logprobs(self, samples: Sequence[Sample]) -> list[list[float]]:
        # a forward is collective under ZeRO-3 (parameters are gathered), so all ranks run it
        actors = self.actors if self.zero3 else self.actors[:1]
        return actors.run("logprobs", list(samples))[0]

    def save_checkpoint(self, directory: str, tag: str, hf_dir: str | None) -> None:
        self.actors.run("save_checkpoint", directory, tag, hf_dir)

    def save_hf(self, hf_dir: str) -> None:
        self.actors.run("save_hf", hf_dir)

    def load_checkpoint(self, directory: str, tag: str) -> int:
        return self.actors.run("load_checkpoint", directory, tag)[0]

    def shutdown(self) -> None:
        self.actors.kill()
