"""LoRA through peft: the merged weights the learner ships reproduce the adapted model."""
from __future__ import annotations

import torch

from softverify.config import LoraConfig
from softverify.lora import apply_lora, merged_state_dict
from softverify.modeling import load_causal_lm


def test_merged_state_dict_reproduces_the_adapted_model(tiny_model_dir):
    model, _ = load_causal_lm(str(tiny_model_dir))
    plain, _ = load_causal_lm(str(tiny_model_dir))
    peft_model = apply_lora(model, LoraConfig(enabled=True, r=4, target_modules=["q_proj", "down_proj"]))
    torch.manual_seed(0)
    for n, p in peft_model.named_parameters():
        if "lora_B" in n:  # B starts at 0 (no change); make the adapters do something
            p.data.normal_(0, 0.5)
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
