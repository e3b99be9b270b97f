"""The policy learner: one DeepSpeed rank. A group of these is one DeepSpeed world.

Testable without Ray (a single rank initialises a world of size 1 over gloo); the Ray
actor in :mod:`softverify.actors.learner_group` is a thin shell around it.

Exactness across micro-batches and ranks: DeepSpeed divides each micro-batch loss by the
gradient-accumulation steps and averages gradients over ranks. Each micro-batch loss is
therefore computed with the *global* token (or sequence) count as denominator and scaled
by ``gas * world_size``, so the accumulated gradient equals the gradient of the one loss
over the whole step's batch, however it is split.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from softverify.algo import mode_for
from softverify.algo.encode import completion_batch
from softverify.config import TrainConfig
from softverify.learner.microbatch import contiguous_split
from softverify.model.loading import load_causal_lm
from softverify.learner.seqbatch import CompletionBatch
from softverify.types import Sample


@dataclass
class LearnBatch:
    """What one rank trains on in one step: its samples plus global normalisers."""

    samples: list[Sample]
    values: np.ndarray  # [len(samples)]: what the run's mode trains on (advantages, or rewards: Mode.learner_values)
    total_tokens: int  # sampled completion tokens in the whole step (all ranks; forced ones not counted)
    total_seqs: int  # sequences in the whole step (all ranks)


def shard_indices(n: int, world_size: int) -> list[list[int]]:
    """Contiguous, near-equal shards (sizes differ by at most one)."""
    return contiguous_split(n, world_size)


def grad_accum_steps(cfg: TrainConfig) -> int:
    """Micro-batches per rank per pass; fixed for the run because DeepSpeed fixes it at init."""
    n = cfg.rollout.prompts_per_step * cfg.samples_per_prompt
    per_rank = math.ceil(n / cfg.learner.num_ranks)
    return max(1, math.ceil(per_rank / cfg.learner.micro_batch_size))


def deepspeed_config(cfg: TrainConfig) -> dict:
    lc = cfg.learner
    gas = grad_accum_steps(cfg)
    half = {}
    if cfg.model.dtype == "bfloat16" and lc.zero_stage >= 1:
        # bf16 weights: DeepSpeed's ZeRO optimisers keep fp32 master copies of their partitions
        # and accumulate gradients in fp32, as peers train bf16 models; without this section
        # AdamW updates the bf16 weights themselves and small updates round away. DeepSpeed
        # (runtime/engine.py: _do_optimizer_sanity_check) has no bf16 + fp32-accumulation mode
        # at ZeRO-0, which keeps the plain update there.
        half = {"bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": "fp32"}}
    return {
        **half,
        "train_micro_batch_size_per_gpu": lc.micro_batch_size,
        "gradient_accumulation_steps": gas,
        "train_batch_size": lc.micro_batch_size * gas * lc.num_ranks,
        # ZeRO-0: the learner clips itself (Learner._step), because DeepSpeed's stage-0 path
        # computes the global norm and drops it (get_global_grad_norm() is None there)
        "gradient_clipping": 0.0 if lc.zero_stage == 0 else lc.grad_clip,
        "zero_optimization": {"stage": lc.zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based): linear warm-up over
    ``warmup`` steps, then constant or a linear/cosine decay reaching 0 at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(total - warmup, 1)
    frac = min(max(step - warmup, 0) / span, 1.0)
    if schedule == "linear":
        return 1.0 - frac
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    raise ValueError(f"unknown lr schedule {schedule!r}; expected 'constant', 'linear' or 'cosine'")


def freeze_below_top_layers(model, n: int) -> list[str]:
    """Freeze everything but the top ``n`` decoder layers and the final norm (all layers
    when the model has fewer than ``n``; embeddings stay frozen); returns the names of the
    parameters left trainable."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"learner.train_layers needs a decoder with model.layers; {type(model).__name__} has none")
    n = min(n, len(layers))
    model.requires_grad_(False)
    for layer in list(layers)[len(layers) - n:]:
        layer.requires_grad_(True)
    if getattr(inner, "norm", None) is not None:
        inner.norm.requires_grad_(True)
    return [k for k, p in model.named_parameters() if p.requires_grad]


#: DeepSpeed's Muon optimizer module. ZeRO imports it on start (``zero.utils.is_zero_supported_optimizer``)
#: and in its gradient paths (isinstance checks), so it must import; what costs is that its
#: ``original_muon`` decorates three kernels with ``torch.compile`` at import time.
DEEPSPEED_MUON_MODULE = "deepspeed.runtime.zero.muon.muon_optimizer"


def import_deepspeed_muon_lazily() -> None:
    """Import DeepSpeed's Muon module with its ``torch.compile`` decorations deferred to each
    kernel's first call. Decorating calls ``torch.compile``, which loads ``torch._dynamo`` and
    ``torch._inductor``: measured, 5.2 s of a 6.7 s tiny-model Learner start on this 2-core
    machine, paid by every learner rank of every run (and of every test that starts one), for
    kernels the learner never calls (its optimizer is AdamW). Deferred, a Muon kernel is still
    compiled exactly as before, on its first call (``torch.compile`` itself only wraps until
    then). A process that already imported the module keeps it as it is."""
    import functools
    import importlib
    import sys

    if DEEPSPEED_MUON_MODULE in sys.modules:
        return
    from deepspeed.runtime import compiler

    eager = compiler.compile

    def deferred():
        def decorate(fn):
            compiled = None

            @functools.wraps(fn)
            def call(*args, **kwargs):
                nonlocal compiled
                if compiled is None:
                    compiled = eager()(fn)
                return compiled(*args, **kwargs)

            return call

        return decorate

    compiler.compile = deferred
    try:
        importlib.import_module(DEEPSPEED_MUON_MODULE)
    finally:
        compiler.compile = eager


def cuda_local_rank(environ, ray_gpu_ids: Sequence) -> str:
    """LOCAL_RANK of a CUDA learner rank: the index of its own GPU among those the process sees.

    Ray narrows ``CUDA_VISIBLE_DEVICES`` to an actor's own GPUs, so that index is 0 -- except
    under ``RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES``, where every actor sees every GPU of
    its node and its own is the first of ``ray.get_gpu_ids()``; 0 there would put every rank
    on GPU 0 (NCCL then refuses the duplicate device)."""
    if environ.get("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES") and ray_gpu_ids:
        return str(int(ray_gpu_ids[0]))
    return environ.get("LOCAL_RANK", "0")


def _ray_gpu_ids() -> list:
    """This Ray actor's GPU ids; none outside Ray (the Learner also runs without it)."""
    try:
        import ray

        return list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except ImportError:
        return []


class Learner:
    def __init__(
        self,
        cfg: TrainConfig,
        model_path: str,
        rank: int = 0,
        world_size: int = 1,
        master_addr: str = "127.0.0.1",
        master_port: int = 29500,
    ):
        import deepspeed

        import_deepspeed_muon_lazily()
        self.cfg = cfg
        self.rank, self.world_size = rank, world_size
        torch.set_num_threads(cfg.learner.torch_threads)
        torch.manual_seed(cfg.trainer.seed)
        use_cuda = cfg.learner.placement.num_gpus > 0 and torch.cuda.is_available()
        os.environ.update(
            MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
            WORLD_SIZE=str(world_size), LOCAL_RANK=cuda_local_rank(os.environ, _ray_gpu_ids()) if use_cuda else "0",
        )
        from softverify.infra.quiet import library_stdout

        with library_stdout():  # DeepSpeed prints its shm op build with a bare print(): off unless --verbose
            deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo", verbose=False)
        self.device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        model, self.tokenizer = load_causal_lm(model_path, cfg.model.dtype, cfg.model.trust_remote_code)
        if cfg.learner.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.config.use_cache = False
        self.trainable: list[str] | None = None
        if cfg.learner.train_layers is not None:
            self.trainable = freeze_below_top_layers(model, cfg.learner.train_layers)
        self.lora = cfg.learner.lora.enabled
        if self.lora:
            from softverify.learner.lora import apply_lora

            model = apply_lora(model, cfg.learner.lora)
        self.tied = bool(getattr(model.config, "tie_word_embeddings", False))
        self.ref = None
        if cfg.algorithm.kl_coef > 0:
            self.ref, _ = load_causal_lm(model_path, cfg.model.dtype, cfg.model.trust_remote_code)
            self.ref.to(self.device).eval().requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.learner.lr, weight_decay=cfg.learner.weight_decay,
                                fused=cfg.learner.fused_optimizer or None)
        lc = cfg.learner
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: lr_factor(k, lc.lr_warmup_steps, cfg.trainer.steps, lc.lr_schedule))
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=opt, model_parameters=params, lr_scheduler=sched, config=deepspeed_config(cfg)
        )
        self.gas = grad_accum_steps(cfg)
        self.mode = mode_for(cfg)
        self.steps_done = 0
        self._params = params
        self._grad_norm: float | None = None

    # ------------------------------------------------------------------ training
    # What a training mode (softverify.algo) uses of its rank in Mode.learn.
    def micro_step(self) -> None:
        """``engine.step()``; at ZeRO-0 the learner clips the (already all-reduced, so
        identical on every rank) gradients first at each accumulation boundary, keeping the
        global norm that DeepSpeed's stage-0 clip computes and drops."""
        if self.cfg.learner.zero_stage == 0 and self.engine.is_gradient_accumulation_boundary():
            clip = self.cfg.learner.grad_clip
            self._grad_norm = float(torch.nn.utils.clip_grad_norm_(self._params, clip if clip > 0 else float("inf")))
        self.engine.step()

    def _global_grad_norm(self) -> float | None:
        return self._grad_norm if self.cfg.learner.zero_stage == 0 else self.engine.get_global_grad_norm()

    def autocast(self):
        """``learner.mixed_precision``: the context every forward of this rank runs in.
        Autocast (not a bf16 copy of the model) keeps master weights, gradients and Adam's
        state in fp32 while the matmuls run in bf16; backward follows the forward's dtypes.
        The logprob code casts logits to fp32 before its log-softmax either way."""
        bf16 = self.cfg.learner.mixed_precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def _logprobs(self, model, ss: Sequence[Sample]) -> CompletionBatch:
        return completion_batch(model, self.cfg, self.tokenizer.pad_token_id, ss, device=self.device)

    def dummy_sample(self) -> Sample:
        """A one-token sequence for a rank with nothing left in a micro-batch: its loss is
        multiplied by 0, it only keeps DeepSpeed's collectives aligned across ranks."""
        pad = self.tokenizer.pad_token_id
        return Sample(prompt_id="", prompt="", completion="", prompt_token_ids=[pad], completion_token_ids=[pad],
                      behaviour_logprobs=[0.0])

    def finish_step(self, out: dict[str, float]) -> dict[str, float]:
        """Count the update and add the optimiser's view of it (``grad_norm``, ``lr``) to the
        mode's metrics."""
        self.steps_done += 1
        gn = self._global_grad_norm()
        out["grad_norm"] = float(gn) if gn is not None else float("nan")
        out["lr"] = float(self.optimizer.param_groups[0]["lr"])
        return out

    def train_step(self, batch: LearnBatch) -> dict[str, float]:
        """One update from this rank's shard of the step: the run's training mode's loss
        (:meth:`softverify.algo.base.Mode.learn`)."""
        return self.mode.learn(self, batch)

    # ------------------------------------------------------------------ weights
    def state_dict(self, trainable_only: bool = False, copy: bool = True,
                   device: str | torch.device = "cpu") -> dict[str, torch.Tensor] | None:
        """Full weights on CPU, or on ``device`` (the collective broadcast sends from the GPU the
        weights live on: no round trip through host memory) (collective under ZeRO-3: every rank must call it);
        returned by rank 0 only. Tied ``lm_head`` is dropped (the receiver re-ties it).
        ``trainable_only`` (weight sync with ``learner.train_layers`` or LoRA): only the tensors
        that training changes; the frozen rest is identical on every holder of the policy. With
        LoRA and ``learner.lora.sync='adapters'`` that is the adapters' factors
        (:func:`softverify.learner.lora.adapter_factors`), which the rollout worker merges itself.

        Each kept tensor is copied into its own storage, and only the kept ones (filtered
        first: a partial sync copies only what it ships). The copy is needed even on CPU:
        DeepSpeed's ZeRO keeps parameters as views of one flat buffer, and pickling a view
        (Ray's serialiser) writes its whole storage -- measured, 21 GB resident for a 540 MB
        SmolLM2 sync without it; ZeRO-3's gathered parameters exist only inside the gather.
        ``copy=False`` (the weight sync's wire form, :func:`softverify.sync.wire.to_wire`, whose
        numpy arrays pickle just their own bytes): detached tensors sharing the parameters'
        memory, valid until the next step; ZeRO-3 and LoRA still copy (their tensors are made
        for the call)."""
        module = self.engine.module
        if self.lora:
            from softverify.learner.lora import adapter_factors, merged_state_dict

            if self.rank != 0:
                return None
            if trainable_only and self.cfg.learner.lora.sync == "adapters":
                return adapter_factors(module)  # the workers add B @ A to their base weights
            sd = merged_state_dict(module, adapted_only=trainable_only)
            if self.tied and not trainable_only:
                sd.pop("lm_head.weight", None)
            return sd
        keep = set(self.trainable) if trainable_only and self.trainable is not None else None

        def host() -> dict[str, torch.Tensor] | None:  # filtered before anything is copied
            if self.rank != 0:
                return None
            own = copy or self.cfg.learner.zero_stage == 3
            return {k: v.detach().to(device, copy=own) for k, v in module.state_dict().items()
                    if (keep is None or k in keep) and not (self.tied and k == "lm_head.weight")}

        if self.cfg.learner.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                return host()
        return host()

    @torch.no_grad()
    def logprobs(self, samples: Sequence[Sample]) -> list[list[float]]:
        """Teacher-forced logprobs of the samples' completions under the current weights."""
        self.engine.eval()
        with self.autocast():
            cb = self._logprobs(self.engine, samples)
        return [cb.logp[b, : len(s.completion_token_ids)].tolist() for b, s in enumerate(samples)]

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: str, tag: str, hf_dir: str | None = None) -> None:
        """Collective: DeepSpeed state (weights, optimizer, its step counters) under
        ``directory/tag``; rank 0 also writes a safetensors HF model to ``hf_dir``."""
        self.engine.save_checkpoint(directory, tag=tag, client_state={"steps_done": self.steps_done})
        sd = self.state_dict()
        if self.rank == 0 and hf_dir:
            self.save_hf(hf_dir, sd)

    def save_hf(self, hf_dir: str, sd: dict[str, torch.Tensor] | None = None) -> None:
        sd = sd if sd is not None else self.state_dict()
        if self.rank != 0 or sd is None:
            return
        module = self.engine.module.get_base_model() if self.lora else self.engine.module
        module.save_pretrained(hf_dir, state_dict=sd, safe_serialization=True)
        self.tokenizer.save_pretrained(hf_dir)

    def load_checkpoint(self, directory: str, tag: str) -> None:
        _, client = self.engine.load_checkpoint(directory, tag=tag)
        if client is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint {tag!r} under {directory!r}")
        self.steps_done = int(client.get("steps_done", 0))
