"""LoRA through peft for the learner, and the weights it hands to everyone else.

Rollout engines, checkpoints' HF export and serving all hold a *plain* model under the plain
parameter names. Two ways to bring a rollout engine up to date (``learner.lora.sync``):

- ``adapters`` (default): the learner ships each adapted module's factors, ``A`` and
  ``(alpha / r) * B`` (:func:`adapter_factors`), r x (in + out) numbers per module instead of
  in x out; the rollout worker adds ``B @ A`` to that module's *base* weight, which it reads once
  from the model files (:class:`AdapterMerger`). Base weights never change under LoRA, so this is
  exact up to float rounding, and a restarted or resumed worker needs nothing else.
- ``merged``: the learner ships the merged weights ``W + (alpha / r) * B @ A`` of the adapted
  modules (:func:`merged_state_dict`); for an engine that cannot read its base weights.

Checkpoints' HF export and the final model always hold the merged, plain weights.
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


#: Key suffixes of an adapter payload: ``"<plain weight name>" + suffix``. ``::`` never occurs in a
#: parameter name, so a payload cannot be mistaken for (or mixed up with) plain weights.
FACTOR_A, FACTOR_B = "::lora_A", "::lora_B"


def adapter_factors(peft_model) -> dict[str, torch.Tensor]:
    """Each adapted module's factors as CPU copies: ``A`` ``[r, in]`` and ``scaling * B``
    ``[out, r]`` (scaling = alpha / r, folded in so the payload is tensors only and survives a
    half-precision wire cast), keyed by the plain weight name plus :data:`FACTOR_A` /
    :data:`FACTOR_B`. ``B @ A`` is then exactly the delta :func:`merged_state_dict` adds
    (up to rounding). One active adapter per module (what :func:`apply_lora` makes)."""
    from peft.tuners.lora import LoraLayer

    out: dict[str, torch.Tensor] = {}
    for name, mod in peft_model.named_modules():
        if not isinstance(mod, LoraLayer):
            continue
        if len(mod.active_adapters) != 1 or getattr(mod, "fan_in_fan_out", False):
            raise ValueError(f"learner.lora.sync='adapters' takes one active adapter on a plain Linear; "
                             f"{name!r} has {mod.active_adapters} (fan_in_fan_out={mod.fan_in_fan_out}); "
                             "use learner.lora.sync='merged'")
        a = mod.active_adapters[0]
        plain = _plain_name(name + ".weight")
        with torch.no_grad():
            out[plain + FACTOR_A] = mod.lora_A[a].weight.detach().cpu().clone()
            out[plain + FACTOR_B] = (mod.lora_B[a].weight.detach() * mod.scaling[a]).cpu().clone()
    return out


def is_adapter_payload(state: dict) -> bool:
    return any(k.endswith((FACTOR_A, FACTOR_B)) for k in state)


def read_base_weights(model_dir: str, names: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors as stored in an HF model directory's safetensors file(s) (one file, or
    the shards ``model.safetensors.index.json`` maps): the weights every policy holder starts
    from. A name the files do not hold is an error naming it."""
    import json
    from pathlib import Path

    from safetensors import safe_open

    d = Path(model_dir)
    index = d / "model.safetensors.index.json"
    if index.is_file():
        where = json.loads(index.read_text())["weight_map"]
    else:
        where = {}
        if (d / "model.safetensors").is_file():
            with safe_open(str(d / "model.safetensors"), "pt") as f:
                where = dict.fromkeys(f.keys(), "model.safetensors")
    missing = [n for n in names if n not in where]
    if missing:
        raise ValueError(f"learner.lora.sync='adapters': the model files in {model_dir!r} hold no tensor "
                         f"{missing[:3]} (the rollout worker adds the adapters to these base weights); "
                         "use learner.lora.sync='merged'")
    out: dict[str, torch.Tensor] = {}
    for file in sorted({where[n] for n in names}):
        with safe_open(str(d / file), "pt") as f:
            for n in names:
                if where[n] == file:
                    out[n] = f.get_tensor(n)
    return out


class AdapterMerger:
    """Rollout-worker side of ``learner.lora.sync='adapters'``: turns a factor payload into the
    merged weights of the adapted modules, ``W0 + B @ A`` in float32 (as peft merges on CPU),
    with ``W0`` read from the model files on first use and kept."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.base: dict[str, torch.Tensor] = {}

    def merge(self, payload: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = sorted({k[: -len(FACTOR_A)] for k in payload if k.endswith(FACTOR_A)})
        if not names or len(payload) != 2 * len(names) or any(n + FACTOR_B not in payload for n in names):
            raise ValueError(f"an adapter payload holds A and B for every module; got keys {sorted(payload)[:6]}")
        need = [n for n in names if n not in self.base]
        if need:
            self.base.update({k: v.float() for k, v in read_base_weights(self.model_dir, need).items()})
        out = {}
        for n in names:
            a, b = payload[n + FACTOR_A].float().cpu(), payload[n + FACTOR_B].float().cpu()
            out[n] = self.base[n] + b @ a
        return out
