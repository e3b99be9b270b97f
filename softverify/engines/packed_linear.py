"""Linear layers with oneDNN-prepacked weights, for CPU decoding.

A decode step multiplies a few rows (the live completions) by every weight matrix, so it
is bound by how fast the weights stream from memory. ``F.linear`` hands MKL a row-major
``[out, in]`` weight that its small-M GEMM repacks on every call: at 8 rows a
576x1536 matmul with weights coming from DRAM takes 0.65 ms against 0.27 ms at one row.
Packing each weight once into oneDNN's blocked layout (what ``torch.compile``'s CPU
freezing does) brings 8 rows to 0.39 ms and a SmolLM2-135M decode step from ~100 to ~60
ms of matmul time (numbers: benchmarks/README.md, "Rollout engine kernels").

The ``nn.Linear`` modules keep their ``weight`` parameters, so ``load_state_dict`` and
weight sync work unchanged. A packed copy remembers the weight tensor and its in-place
version counter; any change (a weight sync's ``copy_``, an optimiser step, a new
``.data``) makes the next forward repack, so a stale copy is never used. Only fp32 and
bf16 on CPU are packed (bf16 where the CPU has oneDNN's bf16 kernels), and only under
``no_grad`` (the op has no autograd): anything else falls back to ``F.linear``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

PACK_HINT_ROWS = 8  # oneDNN picks its blocked layout for this many rows; any row count works


def available() -> bool:
    """Whether this torch build has the oneDNN packed-linear ops."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def bf16_packable() -> bool:
    """Whether this CPU can run oneDNN's bf16 packed linear: it needs AVX-512 (BW/VL/DQ) or
    AVX-NE-CONVERT, which e.g. an AVX2-only AMD EPYC lacks (the op then raises at pack time)."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe()) if probe is not None else False


class PackedLinear(nn.Linear):
    """``nn.Linear`` whose inference forward uses a prepacked copy of its weight."""

    _packed: torch.Tensor | None = None
    _packed_of: tuple[int, int] | None = None  # (weight storage address, version) the copy was made from

    def packable(self) -> bool:
        w = self.weight
        return w.device.type == "cpu" and (w.dtype == torch.float32 or (w.dtype == torch.bfloat16 and bf16_packable()))

    def pack(self) -> None:
        w = self.weight.detach()
        if not self.packable():
            self._packed, self._packed_of = None, None
            return
        self._packed = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), PACK_HINT_ROWS)
        self._packed_of = (w.data_ptr(), self.weight._version)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed_of is None or torch.is_grad_enabled() or x.dtype != self.weight.dtype or x.device.type != "cpu":
            return F.linear(x, self.weight, self.bias)
        if self._packed_of != (self.weight.data_ptr(), self.weight._version):
            self.pack()  # the weights changed since the copy was made
            if self._packed is None:
                return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")


def prepack_linears(model: nn.Module) -> int:
    """Turn every ``nn.Linear`` of ``model`` into a :class:`PackedLinear` and pack it.
    Returns how many were packed (0 when the ops are unavailable: the model is untouched)."""
    if not available():
        return 0
    n = 0
    for mod in model.modules():
        if type(mod) is nn.Linear:
            mod.__class__ = PackedLinear
        if isinstance(mod, PackedLinear):
            mod.pack()
            n += mod._packed is not None
    return n


def repack(model: nn.Module) -> None:
    """Refresh every packed copy now (after a weight sync), so the first decode step
    after it does not pay for the packing."""
    for mod in model.modules():
        if isinstance(mod, PackedLinear) and mod._packed_of is not None:
            mod.pack()
