"""What a weight sync ships: the state dict's wire dtype, its wire form and its size.

Pure functions, used by the learner actor before it hands rank 0's state dict to the
object store.

The wire form (:class:`WireState`) holds numpy arrays, not torch tensors. Ray serialises a
torch tensor by pickling its storage into bytes (copies at every hop: the sender's pickle,
the store, the receiver's unpickle), but hands numpy arrays to pickle 5 out of band: the
sender writes each array into the shared-memory store once and every worker on the node
reads it in place, zero-copy, so its one copy is ``load_state_dict`` into its own
parameters. Measured for SmolLM2-135M fp32 to two workers on one node: 1.1-1.3 s a sync as
tensors, 0.2 s as numpy (benchmarks/README.md). The sender needs no copy of its own either:
a contiguous parameter view is written out as just its own bytes.

Half precision halves the bytes every rollout worker fetches each sync (the
whole cost of a sync on one machine is copying them); the receiving engine casts back to
its own dtype on load (``load_state_dict`` copies into the existing parameters), so an
fp32 rollout model then holds bf16/fp16-rounded weights: the importance ratio corrects
for that small gap, and ``float32`` (the default) keeps rollouts bit-equal to the learner.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: learner.sync_dtype values and the torch dtype each ships floating-point tensors in
SYNC_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cast_for_sync(state: dict[str, torch.Tensor], sync_dtype: str) -> dict[str, torch.Tensor]:
    """``state`` with its floating-point tensors in the wire dtype (others unchanged)."""
    if sync_dtype not in SYNC_DTYPES:
        raise ValueError(f"sync dtype {sync_dtype!r} is not one of {sorted(SYNC_DTYPES)}")
    dtype = SYNC_DTYPES[sync_dtype]
    if dtype is None:
        return state
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def state_bytes(state: dict[str, torch.Tensor] | WireState | None) -> int:
    """Bytes of tensor data in ``state`` (0 for None: a rank other than 0 returns nothing)."""
    if isinstance(state, WireState):
        return state.nbytes()
    return sum(v.numel() * v.element_size() for v in state.values()) if state else 0


@dataclass
class WireState:
    """A state dict in the object store's zero-copy form: each tensor as a numpy array of its
    bytes (dtypes numpy lacks, bfloat16, travel as same-width integers) and its torch dtype's
    name, so :func:`from_wire` restores the exact tensors."""

    arrays: dict[str, np.ndarray]
    dtypes: dict[str, str]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


#: torch dtypes without a numpy twin, and the same-width integer they travel as
_BIT_VIEWS = {torch.bfloat16: torch.int16, **{getattr(torch, n): torch.uint8 for n in (
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz") if hasattr(torch, n)}}


def to_wire(state: dict[str, torch.Tensor]) -> WireState:
    """``state`` as numpy arrays sharing the tensors' memory (CPU tensors are not copied; the
    arrays are only valid until the tensors change, so hand the result to the object store
    at once). Non-contiguous tensors are made contiguous (a copy), so that each array's
    pickle carries its own bytes only."""
    arrays, dtypes = {}, {}
    for k, v in state.items():
        t = v.detach().cpu().contiguous()
        dtypes[k] = str(t.dtype).removeprefix("torch.")
        if t.dtype in _BIT_VIEWS:
            t = t.view(_BIT_VIEWS[t.dtype])
        arrays[k] = t.numpy()
    return WireState(arrays, dtypes)


def from_wire(wire: WireState) -> dict[str, torch.Tensor]:
    """The tensors of a :class:`WireState`, sharing its arrays' memory (read-only when Ray
    returned them from the store: copy them into parameters, as ``load_state_dict`` does,
    never write to them)."""
    import warnings

    out = {}
    with warnings.catch_warnings():  # torch warns that a read-only array gives a tensor it must not write to
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for k, a in wire.arrays.items():
            dtype = getattr(torch, wire.dtypes[k], None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"weight payload tensor {k!r} has dtype {wire.dtypes[k]!r}, not a torch dtype")
            t = torch.from_numpy(a)
            out[k] = t.view(dtype) if t.dtype != dtype else t
    return out
