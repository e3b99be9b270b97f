"""LoRA through peft: the merged weights the learner ships reproduce the adapted model."""
from __future__ import annotations

import torch

from softverify.config import LoraConfig
from softverify.learner.lora import apply_lora, merged_state_dict
from softverify.model.loading import load_causal_lm


def _adapted(tiny_model_dir, alpha: float = 32.0):
    """The tiny model with r=4 adapters on q_proj and down_proj whose B is random (B starts at 0,
    no change; this makes the adapters do something)."""
    model, _ = load_causal_lm(str(tiny_model_dir))
    peft_model = apply_lora(model, LoraConfig(enabled=True, r=4, alpha=alpha, target_modules=["q_proj", "down_proj"]))
    torch.manual_seed(0)
    for n, p in peft_model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    return peft_model


def test_merged_state_dict_reproduces_the_adapted_model(tiny_model_dir):
    plain, _ = load_causal_lm(str(tiny_model_dir))
    peft_model = _adapted(tiny_model_dir)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
    adapted = merged_state_dict(peft_model, adapted_only=True)
    assert adapted and all(k.endswith(("q_proj.weight", "down_proj.weight")) for k in adapted)
    full = merged_state_dict(peft_model)
    assert set(full) == set(plain.state_dict())  # plain names, nothing of peft's
    plain.load_state_dict(adapted, strict=False)  # the partial sync a rollout worker gets
    with torch.no_grad():
        got = plain(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5)
    assert not torch.allclose(want, load_causal_lm(str(tiny_model_dir))[0](input_ids=ids).logits, atol=1e-3)


def test_unknown_target_module_is_named(tiny_model_dir):
    import pytest

    model, _ = load_causal_lm(str(tiny_model_dir))
    with pytest.raises(ValueError, match=r"\['qkv'\] name no Linear module"):
        apply_lora(model, LoraConfig(enabled=True, target_modules=["qkv"]))


def test_adapter_factors_merged_on_the_worker_equal_the_learners_merged_weights(tiny_model_dir):
    """learner.lora.sync='adapters': A and (alpha/r)*B travel; the worker adds B @ A to the base
    weights it reads from the model files, and gets what merged_state_dict ships (to rounding)
    for far fewer bytes: r*(in+out) per module instead of in*out."""
    from softverify.learner.lora import FACTOR_A, FACTOR_B, AdapterMerger, adapter_factors, is_adapter_payload
    from softverify.sync.wire import cast_for_sync, state_bytes

    peft_model = _adapted(tiny_model_dir, alpha=12.0)  # scaling 3: folded into B on the wire
    want = merged_state_dict(peft_model, adapted_only=True)
    payload = adapter_factors(peft_model)
    assert is_adapter_payload(payload) and not is_adapter_payload(want)
    assert sorted(payload) == sorted([n + FACTOR_A for n in want] + [n + FACTOR_B for n in want])
    q = "model.layers.0.self_attn.q_proj.weight"
    assert payload[q + FACTOR_A].shape == (4, 32) and payload[q + FACTOR_B].shape == (32, 4)  # tiny: hidden 32
    merger = AdapterMerger(str(tiny_model_dir))
    got = merger.merge(payload)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=0)
    # the base is read once and kept: a second payload (the next step) reuses it
    assert set(merger.base) == set(want)
    again = merger.merge(cast_for_sync(payload, "bfloat16"))  # a half-precision wire: close, not equal
    assert max(float((again[k] - want[k]).abs().max()) for k in want) < 0.05
    # bytes: 2 layers x (q: 4*(32+32), down: 4*(64+32)) floats against 2 x (32*32 + 32*64)
    assert state_bytes(payload) == 4 * 2 * (4 * 64 + 4 * 96) and state_bytes(want) == 4 * 2 * (32 * 32 + 32 * 64)


def test_adapter_payload_and_base_weight_errors_are_named(tiny_model_dir, tmp_path):
    import pytest

    from softverify.learner.lora import FACTOR_A, AdapterMerger, read_base_weights

    with pytest.raises(ValueError, match=r"hold no tensor \['model.layers.9.mlp.up_proj.weight'\]"):
        read_base_weights(str(tiny_model_dir), ["model.layers.9.mlp.up_proj.weight"])
    with pytest.raises(ValueError, match="holds A and B for every module"):
        AdapterMerger(str(tiny_model_dir)).merge({"model.layers.0.self_attn.q_proj.weight" + FACTOR_A: torch.zeros(1)})
    with pytest.raises(ValueError, match="hold no tensor"):
        read_base_weights(str(tmp_path), ["x.weight"])  # no model files at all
