"""Weight-sync wire format: dtype cast, byte count, the numpy wire form (pure functions)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from softverify.sync.wire import WireState, cast_for_sync, from_wire, state_bytes, to_wire


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


def test_wire_form_round_trips_every_dtype_without_copying():
    sd = {"w": torch.randn(3, 4), "h": torch.randn(5).bfloat16(), "f": torch.randn(2).half(), "ids": torch.arange(4),
          "t": torch.randn(4, 3).t()}  # a transposed (non-contiguous) tensor is made contiguous
    wire = to_wire(sd)
    assert state_bytes(wire) == state_bytes(sd)
    assert wire.arrays["h"].dtype == np.int16 and wire.dtypes["h"] == "bfloat16"  # numpy has no bfloat16
    assert np.shares_memory(wire.arrays["w"], sd["w"].numpy())  # a contiguous CPU tensor is not copied
    back = from_wire(pickle.loads(pickle.dumps(wire, protocol=5)))
    assert sorted(back) == sorted(sd)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def test_wire_form_reads_read_only_arrays_as_ray_returns_them():
    a = np.arange(6, dtype=np.float32)
    a.setflags(write=False)  # Ray's zero-copy get hands out read-only views of shared memory
    out = from_wire(WireState({"w": a}, {"w": "float32"}))
    assert torch.equal(out["w"], torch.arange(6, dtype=torch.float32))
    dst = torch.zeros(6)
    dst.copy_(out["w"])  # what load_state_dict does with it
    assert dst[5] == 5


def test_wire_form_names_a_bad_dtype():
    with pytest.raises(ValueError, match="'w' has dtype 'complex_thing'"):
        from_wire(WireState({"w": np.zeros(2, np.float32)}, {"w": "complex_thing"}))
