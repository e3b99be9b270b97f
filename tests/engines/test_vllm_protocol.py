"""The vLLM engine's parts that need no vLLM: the weight-update metadata protocol that goes
over ``collective_rpc``, the receiver's bucket plan (the sender's, from the message), the
sampler refusals and the ``rollout.vllm`` config keys. The engine itself runs in
tests/engines/test_vllm_cpu.py wherever vLLM is importable."""
import threading

import pytest
import torch

from softverify.infra.cluster import free_port
from softverify.sync.collective import TensorSpec, WeightBroadcaster, plan_buckets, specs_of
from softverify.config import ConfigError, build_config
from softverify.engines.base import SamplingParams
from softverify.engines.sampling_rules import vllm_sampling_problem
from softverify.engines.vllm_engine import VLLMEngine, decode_specs, encode_specs, receive_update, update_message


def _state():
    g = torch.Generator().manual_seed(0)
    return {
        "model.layers.0.self_attn.q_proj.weight": torch.randn(16, 8, generator=g),
        "model.layers.0.input_layernorm.weight": torch.randn(8, generator=g),
        "model.layers.1.mlp.up_proj.weight": torch.randn(12, 8, generator=g).to(torch.bfloat16),
        "model.layers.1.mlp.down_proj.weight": torch.randn(8, 12, generator=g).to(torch.bfloat16),
    }


def _plain(obj) -> bool:
    """Only what msgpack carries as itself: dicts, lists, str, int."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    return isinstance(obj, (str, int))


def test_update_message_is_metadata_only_and_decodes_to_the_senders_specs():
    state = _state()
    msg = update_message(state, bucket_bytes=1000)
    assert _plain(msg)  # no tensor, no tuple, no numpy scalar: nothing msgpack would mangle
    assert msg["bucket_bytes"] == 1000
    assert msg["specs"][0] == ["model.layers.0.self_attn.q_proj.weight", [16, 8], "torch.float32"]
    assert decode_specs(msg["specs"]) == specs_of(state)
    # the receiver's bucket plan, computed from the message alone, is the sender's
    assert plan_buckets(decode_specs(msg["specs"]), msg["bucket_bytes"]) == plan_buckets(specs_of(state), 1000)
    assert encode_specs([]) == [] and decode_specs([]) == []


@pytest.mark.parametrize("bad, match", [
    ({"specs": 1}, "must be a list"),
    ([["w", [2, 2]]], r"entry 0 is \['w', \[2, 2\]\]; expected \[name, shape, dtype\]"),
    ([["", [2], "torch.float32"]], "name '' is not a non-empty string"),
    ([["w", [2, -1], "torch.float32"]], r"entry 0 \(w\): shape \[2, -1\] is not a list of sizes"),
    ([["w", [2], "torch.float32"], ["v", [2], "float32"]], r"entry 1 \(v\): dtype 'float32' is not one of"),
])
def test_a_malformed_header_fails_in_the_worker_naming_the_entry(bad, match):
    with pytest.raises(ValueError, match=match):
        decode_specs(bad)


def test_specs_over_rpc_then_buckets_by_broadcast_delivers_exact_tensors():
    """The worker extension's receive (receive_update) against a sender that broadcasts no
    header, over gloo (the code NCCL runs on GPUs): two updates on one group, the receiver
    adopting the sender's bucket size from the message (here one tensor per bucket)."""
    state, port, got, errors = _state(), free_port(), [], []
    updates = [state, {k: v * 2 for k, v in list(state.items())[:2]}]  # the second one partial
    msgs = [update_message(u, bucket_bytes=64) for u in updates]

    def sender():
        try:
            b = WeightBroadcaster(0, 2, "127.0.0.1", port, backend="gloo", timeout_s=60, bucket_bytes=64)
            for u in updates:
                b.send(u, header=False)
        except Exception as e:  # noqa: BLE001  (re-raised in the test thread)
            errors.append(e)

    def worker():
        try:
            b = WeightBroadcaster(1, 2, "127.0.0.1", port, backend="gloo", timeout_s=60)  # default bucket size
            for m in msgs:
                got.append(receive_update(b, m))
            assert b.bucket_bytes == 64
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=sender), threading.Thread(target=worker)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    for want, have in zip(updates, got):
        assert list(have) == list(want)
        for k in want:
            assert have[k].dtype == want[k].dtype and torch.equal(have[k], want[k]), k


def test_vllm_sampling_rule_refuses_truncation_that_biases_the_ratio():
    assert vllm_sampling_problem(1.0, 1.0, 0) is None
    assert vllm_sampling_problem(0.7, 1.0, 0) is None
    assert vllm_sampling_problem(0.0, 0.5, 20) is None  # greedy: no ratio uses these logprobs
    assert "rollout.top_p=0.9 with the vLLM engine" in vllm_sampling_problem(1.0, 0.9, 0)
    msg = vllm_sampling_problem(1.0, 0.95, 50)
    assert "rollout.top_p=0.95 and rollout.top_k=50" in msg and "full softmax" in msg


def test_engine_refuses_before_touching_vllm():
    """The refusals come first in the engine's methods, so they hold (and are tested) even
    where vLLM is not installed: an engine object with no LLM behind it never reaches it."""
    eng = VLLMEngine.__new__(VLLMEngine)
    with pytest.raises(ValueError, match="rollout.top_k=40 with the vLLM engine"):
        eng.generate([[1, 2]], SamplingParams(top_k=40))
    with pytest.raises(ValueError, match="score at temperature 0.7: vLLM's prompt logprobs"):
        eng.score([[1, 2]], [[3]], temperature=0.7)


def test_rollout_vllm_config_keys():
    v = build_config().rollout.vllm
    assert (v.gpu_memory_utilization, v.max_model_len, v.tensor_parallel_size, v.enforce_eager,
            v.enable_sleep_mode) == (0.5, 4096, 1, False, False)
    v = build_config({}, ["rollout.vllm.gpu_memory_utilization=0.85", "rollout.vllm.max_model_len=2048",
                          "rollout.vllm.enforce_eager=true", "rollout.vllm.enable_sleep_mode=true"]).rollout.vllm
    assert (v.gpu_memory_utilization, v.max_model_len, v.enforce_eager, v.enable_sleep_mode) == (0.85, 2048, True, True)
    for bad, where in (("gpu_memory_utilization=1.2", "gpu_memory_utilization"), ("gpu_memory_utilization=0", "gpu_"),
                       ("max_model_len=8", "max_model_len"), ("tensor_parallel_size=0", "tensor_parallel_size"),
                       ("max_modl_len=8", "max_modl_len")):
        with pytest.raises(ConfigError, match=rf"rollout\.vllm\.{where}"):
            build_config({}, [f"rollout.vllm.{bad}"])


def test_config_refuses_vllm_sampling_and_parallelism_it_cannot_honour():
    with pytest.raises(ConfigError, match=r"rollout\.top_p=0\.9 with the vLLM engine"):
        build_config({}, ["rollout.engine=vllm", "rollout.top_p=0.9"])
    with pytest.raises(ConfigError, match=r"rollout\.top_k=5 with the vLLM engine"):
        build_config({}, ["rollout.engine=vllm", "rollout.top_k=5"])
    build_config({}, ["rollout.engine=hf", "rollout.top_p=0.9"])  # HF reports untruncated logprobs
    with pytest.raises(ConfigError, match=r"tensor_parallel_size=2 shards each engine over 2 GPUs"):
        build_config({}, ["rollout.engine=vllm", "rollout.vllm.tensor_parallel_size=2"])
    ok = ["rollout.engine=vllm", "rollout.vllm.tensor_parallel_size=2", "rollout.placement.num_gpus=2"]
    assert build_config({}, ok).rollout.vllm.tensor_parallel_size == 2
    with pytest.raises(ConfigError, match="one member per rollout worker, not per GPU shard"):
        build_config({}, ok + ["learner.sync_method=collective"])


def test_tensor_spec_json_and_rpc_forms_agree():
    """The learner's header (JSON in the broadcast) and the rpc header describe tensors alike."""
    s = specs_of(_state())
    assert [TensorSpec(n, tuple(sh), d) for n, sh, d in encode_specs(s)] == s



def test_auto_engine_on_a_gpu_worker_is_held_to_the_vllm_rule_where_vllm_is_installed():
    import importlib.util

    args = ["rollout.placement.num_gpus=1", "rollout.top_p=0.9"]
    if importlib.util.find_spec("vllm") is None:  # 'auto' will pick the HF engine, which reports full logprobs
        assert build_config({}, args).rollout.top_p == 0.9
    else:
        with pytest.raises(ConfigError, match=r"rollout\.top_p=0\.9 with the vLLM engine"):
            build_config({}, args)
    assert build_config({}, ["rollout.top_p=0.9"]).rollout.top_p == 0.9  # no GPU: 'auto' is HF
