"""Weight-sync wire format: dtype cast and byte count (pure functions)."""
from __future__ import annotations

import pytest
import torch

from softverify.weightsync import cast_for_sync, state_bytes


def test_cast_halves_float_tensors_and_leaves_the_rest():
    sd = {"w": torch.randn(3, 4), "ids": torch.arange(5), "b": torch.randn(7, dtype=torch.float64)}
    assert state_bytes(sd) == 3 * 4 * 4 + 5 * 8 + 7 * 8
    half = cast_for_sync(sd, "bfloat16")
    assert half["w"].dtype == torch.bfloat16 and half["b"].dtype == torch.bfloat16 and half["ids"].dtype == torch.int64
    assert state_bytes(half) == 3 * 4 * 2 + 5 * 8 + 7 * 2
    assert torch.allclose(half["w"].float(), sd["w"], rtol=1e-2)
    assert cast_for_sync(sd, "float32") is sd  # no copy at full precision
    assert state_bytes(None) == 0 and state_bytes({}) == 0


def test_unknown_sync_dtype_is_named():
    with pytest.raises(ValueError, match="'int8' is not one of"):
        cast_for_sync({"w": torch.zeros(1)}, "int8")
