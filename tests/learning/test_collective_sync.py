"""The collective weight broadcast (softverify.sync.collective) on CPUs with gloo: the same
code the NCCL path runs on GPUs. Members are threads here, each with its own group object
(as separate processes would be): rank 0 sends, the others must receive bit-identical
tensors, names, shapes and dtypes."""
import threading

import pytest
import torch

from softverify.infra.cluster import free_port
from softverify.sync.collective import TensorSpec, WeightBroadcaster, plan_buckets, specs_of


def test_buckets_group_consecutive_tensors_of_one_dtype_up_to_the_size():
    f32 = lambda n, name="t": TensorSpec(name, (n,), "torch.float32")  # noqa: E731  (n * 4 bytes)
    specs = [f32(10), f32(10), f32(30), TensorSpec("b", (5,), "torch.bfloat16"), f32(100), f32(1), f32(1)]
    # bytes: 40, 40, 120, 10 (bf16), 400, 4, 4 with 100-byte buckets
    assert plan_buckets(specs, 100) == [[0, 1], [2], [3], [4], [5, 6]]
    assert plan_buckets(specs, 10_000) == [[0, 1, 2], [3], [4, 5, 6]]  # a dtype change always cuts
    assert plan_buckets([], 100) == []
    with pytest.raises(ValueError, match="bucket_bytes must be >= 1, got 0"):
        plan_buckets(specs, 0)
    with pytest.raises(ValueError, match=r"tensor 'c' has dtype torch.complex64"):
        specs_of({"c": torch.zeros(2, dtype=torch.complex64)})


def _broadcast(state, world_size, bucket_bytes):
    port, got, errors = free_port(), {}, []

    def member(rank):
        try:
            b = WeightBroadcaster(rank, world_size, "127.0.0.1", port, backend="gloo", timeout_s=60,
                                  bucket_bytes=bucket_bytes)
            for version in (1, 2):  # two syncs over the same group, the second with changed values
                if rank == 0:
                    got[(0, version)] = b.send({k: v + (version - 1) if v.is_floating_point() else v
                                                for k, v in state.items()})
                else:
                    got[(rank, version)] = b.receive()
        except Exception as e:  # noqa: BLE001  (re-raised in the test thread)
            errors.append(e)

    threads = [threading.Thread(target=member, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return got


@pytest.mark.parametrize("bucket_bytes", [1 << 20, 64])  # one bucket per dtype run; one tensor per bucket
def test_gloo_broadcast_delivers_exact_tensors_to_every_receiver(bucket_bytes):
    g = torch.Generator().manual_seed(0)
    state = {
        "model.layers.5.mlp.up_proj.weight": torch.randn(64, 32, generator=g),
        "model.layers.5.input_layernorm.weight": torch.randn(32, generator=g),
        "lm_head.weight": torch.randn(50, 32, generator=g).to(torch.bfloat16),  # a half-precision wire dtype
        "model.layers.5.self_attn.q_proj.weight": torch.randn(32, 32, generator=g),
        "step": torch.tensor([7], dtype=torch.int64),
    }
    got = _broadcast(state, world_size=3, bucket_bytes=bucket_bytes)
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    assert got[(0, 1)] == got[(0, 2)] == nbytes
    for rank in (1, 2):
        for version in (1, 2):
            r = got[(rank, version)]
            assert list(r) == list(state)  # the sender's order
            for k, v in state.items():
                want = v + (version - 1) if v.is_floating_point() else v
                assert r[k].dtype == want.dtype and r[k].shape == want.shape, k
                assert torch.equal(r[k], want), (k, rank, version)


def test_roles_and_backends_are_checked():
    with pytest.raises(ValueError, match="rank 2 of world_size 2"):
        WeightBroadcaster(2, 2, "127.0.0.1", free_port())
    with pytest.raises(ValueError, match="backend 'nccl' broadcasts CUDA tensors; device cpu is not one"):
        WeightBroadcaster(0, 2, "127.0.0.1", free_port(), backend="nccl", device="cpu")


def test_a_worker_behind_with_no_object_store_copy_says_what_to_do(tiny_model_dir):
    """With learner.sync_method=collective the step's weights carry no object-store ref; a
    worker that fell behind (Ray restarted it, so it left the broadcast group) refuses to
    sample from its stale policy, naming both versions and the two ways out."""
    from softverify.actors.rollout import RolloutCore
    from softverify.config import build_config
    from softverify.types import PolicyWeights

    cfg = build_config({"model": {"path": str(tiny_model_dir)}, "learner": {"sync_method": "collective"}}, [])
    core = RolloutCore(str(tiny_model_dir), cfg.model, cfg.rollout)
    assert not core.in_broadcast_group()
    core._ensure_weights(PolicyWeights(0, None, True))  # same version: nothing to load
    with pytest.raises(RuntimeError, match=r"holds policy version 0, the step needs 3, .*--resume.*object_store"):
        core._ensure_weights(PolicyWeights(3, None, True))
