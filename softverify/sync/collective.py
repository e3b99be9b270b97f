"""Weight broadcast from learner rank 0 to the rollout engines over a collective.

Why: the object-store sync copies the state dict into Ray's plasma store and every worker
copies it out again -- fine on one machine, but for a 7B policy that is ~28 GB through the
object store per step, and GPU weights make a device->host->device round trip. Every peer
(OpenRLHF, verl, NeMo-RL) instead broadcasts the tensors from the learner's rank 0 to the
inference engines with NCCL, GPU to GPU. This module is that path, Ray-free:

- its own process group (a ``TCPStore`` rendezvous and a c10d group built directly), so it
  never touches the default group DeepSpeed initialises in the learner;
- backend ``nccl`` on CUDA devices, ``gloo`` on CPUs (the same code, so it is tested here);
- self-describing: rank 0 first broadcasts a header (names, shapes, dtypes), so partial
  syncs (``learner.train_layers``, LoRA-merged tensors) and half-precision wire dtypes need
  no agreement beforehand;
- bucketed: consecutive tensors of one dtype travel as one flat buffer of at most
  ``bucket_bytes`` (one collective per bucket, not one per tensor; a bigger tensor goes alone).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence

import torch

from softverify.sync.wire import state_bytes

#: Default flat-buffer size per collective call.
BUCKET_BYTES = 64 << 20

_DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
                               torch.int32, torch.int8, torch.uint8, torch.bool)}


@dataclass(frozen=True)
class TensorSpec:
    """What a receiver needs to allocate one tensor of the broadcast."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * _DTYPES[self.dtype].itemsize


def specs_of(state: dict[str, torch.Tensor]) -> list[TensorSpec]:
    """The header of ``state``, in its key order (the order tensors are sent in)."""
    out = []
    for k, v in state.items():
        if str(v.dtype) not in _DTYPES:
            raise ValueError(f"tensor {k!r} has dtype {v.dtype}, which the weight broadcast does not carry; "
                             f"expected one of {sorted(_DTYPES)}")
        out.append(TensorSpec(k, tuple(v.shape), str(v.dtype)))
    return out


def plan_buckets(specs: Sequence[TensorSpec], bucket_bytes: int = BUCKET_BYTES) -> list[list[int]]:
    """Indices of ``specs`` grouped into buckets: consecutive, one dtype each, at most
    ``bucket_bytes`` (a tensor larger than that is a bucket of its own). Pure, so sender and
    receivers compute the same plan from the same header."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    buckets: list[list[int]] = []
    size, dtype = 0, None
    for i, s in enumerate(specs):
        if buckets and s.dtype == dtype and size + s.nbytes <= bucket_bytes:
            buckets[-1].append(i)
            size += s.nbytes
        else:
            buckets.append([i])
            size, dtype = s.nbytes, s.dtype
    return buckets


def broadcast_backend(learner_gpus_per_rank: float, worker_gpus: float) -> str:
    """NCCL only when learner rank 0 and every rollout worker hold whole GPUs, else gloo.

    NCCL refuses two ranks of one communicator on the same device ("Duplicate GPU detected"),
    and Ray packs fractional GPU requests (``num_gpus: 0.5``) onto one device; a whole-GPU
    request is the only placement that guarantees each member a device of its own."""
    return "nccl" if learner_gpus_per_rank >= 1 and worker_gpus >= 1 else "gloo"


def _make_group(backend: str, store, rank: int, world_size: int, timeout: timedelta):
    import torch.distributed as dist

    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, world_size, timeout)
    if backend == "nccl":
        if not hasattr(dist, "ProcessGroupNCCL"):
            raise RuntimeError("backend 'nccl' needs a CUDA build of torch with NCCL; this torch has none "
                               "(use backend 'gloo' on CPUs, or the object-store sync)")
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return dist.ProcessGroupNCCL(store, rank, world_size, opts)
    raise ValueError(f"collective backend {backend!r} is not one of ['gloo', 'nccl']")


class WeightBroadcaster:
    """One member of the weight-broadcast group: rank 0 sends (the learner's rank 0), every
    other rank receives (a rollout engine). All members construct it with the same
    ``host:port`` (rank 0's address; it hosts the rendezvous) and ``world_size``, at the
    same time, and then call :meth:`send` / :meth:`receive` together for each sync."""

    def __init__(self, rank: int, world_size: int, host: str, port: int, backend: str = "gloo",
                 device: str | torch.device = "cpu", timeout_s: float = 300.0, bucket_bytes: int = BUCKET_BYTES):
        import torch.distributed as dist

        if world_size < 2 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of world_size {world_size}: need world_size >= 2 and 0 <= rank < world_size")
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self.device = torch.device(device)
        if backend == "nccl" and self.device.type != "cuda":
            raise ValueError(f"backend 'nccl' broadcasts CUDA tensors; device {self.device} is not one")
        self.bucket_bytes, self._dist = bucket_bytes, dist
        timeout = timedelta(seconds=timeout_s)
        self._store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout)
        self.group = _make_group(backend, dist.PrefixStore("softverify/weights", self._store), rank, world_size,
                                 timeout)

    # ---------------------------------------------------------------- wire
    def _bcast(self, t: torch.Tensor) -> torch.Tensor:
        opts = self._dist.BroadcastOptions()
        opts.rootRank = 0
        self.group.broadcast([t], opts).wait()
        return t

    def _header(self, specs: list[TensorSpec] | None) -> list[TensorSpec]:
        if self.rank == 0:
            # JSON, not pickle: a receiver never unpickles what arrives over the network
            blob = torch.frombuffer(bytearray(json.dumps([[s.name, list(s.shape), s.dtype] for s in specs]).encode()),
                                    dtype=torch.uint8).to(self.device)
            self._bcast(torch.tensor([blob.numel()], dtype=torch.int64, device=self.device))
            self._bcast(blob)
            return specs
        n = self._bcast(torch.zeros(1, dtype=torch.int64, device=self.device))
        blob = self._bcast(torch.empty(int(n.item()), dtype=torch.uint8, device=self.device))
        header = json.loads(blob.cpu().numpy().tobytes().decode())
        return [TensorSpec(name, tuple(shape), dtype) for name, shape, dtype in header]

    # ---------------------------------------------------------------- API
    def send(self, state: dict[str, torch.Tensor], header: bool = True) -> int:
        """Rank 0: broadcast ``state`` (already in its wire dtype); returns the bytes sent.
        ``header=False``: the receivers got the specs another way (a vLLM worker gets them in
        the ``collective_rpc`` call that starts its receive: :mod:`softverify.engines.vllm_engine`)."""
        if self.rank != 0:
            raise RuntimeError(f"rank {self.rank} cannot send: only rank 0 (the learner) sends weights")
        specs = self._header(specs_of(state)) if header else specs_of(state)
        values = list(state.values())
        for bucket in plan_buckets(specs, self.bucket_bytes):
            flat = torch.cat([values[i].detach().reshape(-1).to(self.device) for i in bucket])
            self._bcast(flat)
        return state_bytes(state)

    def receive(self, specs: Sequence[TensorSpec] | None = None) -> dict[str, torch.Tensor]:
        """Other ranks: the state rank 0 sent, tensors on this member's device. ``specs``: the
        header, when it came another way than the broadcast (rank 0 then sends ``header=False``)."""
        if self.rank == 0:
            raise RuntimeError("rank 0 sends; receive() is for the rollout engines")
        specs = self._header(None) if specs is None else list(specs)
        out: dict[str, torch.Tensor] = {}
        for bucket in plan_buckets(specs, self.bucket_bytes):
            dtype = _DTYPES[specs[bucket[0]].dtype]
            flat = self._bcast(torch.empty(sum(specs[i].numel for i in bucket), dtype=dtype, device=self.device))
            for i, part in zip(bucket, flat.split([specs[i].numel for i in bucket])):
                out[specs[i].name] = part.view(specs[i].shape)
        return out
