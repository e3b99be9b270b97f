"""LoRA through peft for the learner, and the weights it hands to everyone else.

Rollout engines, checkpoints' HF export and serving all hold a *plain* model, so the
learner never ships adapters: it ships merged weights ``W + (alpha / r) * B @ A`` under the
plain model's parameter names. Weight sync sends only the adapted modules' weights (what
training changes); the final export sends everything.
"""
from __future__ import annotations

import torch


def apply_lora(model, cfg):
    """Wrap ``model`` with peft LoRA adapters per ``cfg`` (a ``LoraConfig`` section)."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in cfg.target_modules if t not in names]
    if missing:
        raise ValueError(f"learner.lora.target_modules {missing} name no Linear module of this model; "
                         f"it has {sorted(names)}")
    pc = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
                    bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, pc)


def _plain_name(key: str) -> str:
    return key.replace("base_model.model.", "", 1).replace(".base_layer.", ".")


def merged_state_dict(peft_model, adapted_only: bool = False) -> dict[str, torch.Tensor]:
    """The plain model's state dict with every adapter merged in (CPU copies);
    ``adapted_only``: just the weights of modules that carry an adapter."""
    from peft.tuners.lora import LoraLayer

    deltas = {}
    for name, mod in peft_model.named_modules():
        if isinstance(mod, LoraLayer):
            with torch.no_grad():
                deltas[_plain_name(name + ".weight")] = sum(mod.get_delta_weight(a) for a in mod.active_adapters)
    out = {}
    for k, v in peft_model.state_dict().items():
        if "lora_" in k:
            continue
        name = _plain_name(k)
        if adapted_only and name not in deltas:
            continue
        w = v.detach()
        if name in deltas:
            w = w + deltas[name].to(w.dtype)
        out[name] = w.cpu().clone()
    return out
