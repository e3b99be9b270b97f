"""What a weight sync ships: the state dict's wire dtype and its size.

Pure functions, used by the learner actor before it hands rank 0's state dict to the
object store. Half precision halves the bytes every rollout worker fetches each sync (the
whole cost of a sync on one machine is copying them); the receiving engine casts back to
its own dtype on load (``load_state_dict`` copies into the existing parameters), so an
fp32 rollout model then holds bf16/fp16-rounded weights: the importance ratio corrects
for that small gap, and ``float32`` (the default) keeps rollouts bit-equal to the learner.
"""
from __future__ import annotations

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


def state_bytes(state: dict[str, torch.Tensor] | None) -> int:
    """Bytes of tensor data in ``state`` (0 for None: a rank other than 0 returns nothing)."""
    return sum(v.numel() * v.element_size() for v in state.values()) if state else 0
