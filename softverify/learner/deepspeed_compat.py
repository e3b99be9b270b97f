"""What a learner rank needs from DeepSpeed and torch beyond their plain use: the engine's
config, the process-group start-up, and the workarounds for behaviour of theirs the rank
must not inherit (a compiler loaded for kernels it never calls, every rank on GPU 0 where
Ray leaves ``CUDA_VISIBLE_DEVICES`` alone). Kept apart from :mod:`softverify.learner.rank`
so the rank reads as what it trains, and a DeepSpeed upgrade has one module to check.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import torch

from softverify.config import TrainConfig


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
        # ZeRO-0: the learner clips itself (Learner.micro_step), because DeepSpeed's stage-0 path
        # computes the global norm and drops it (get_global_grad_norm() is None there)
        "gradient_clipping": 0.0 if lc.zero_stage == 0 else lc.grad_clip,
        "zero_optimization": {"stage": lc.zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def join_process_group(cfg: TrainConfig, rank: int, world_size: int, master_addr: str,
                       master_port: int) -> torch.device:
    """Join the ranks' process group (NCCL where the rank holds a GPU, else gloo) through the
    environment variables DeepSpeed reads; the rank's device."""
    import deepspeed

    from softverify.infra.quiet import library_stdout

    use_cuda = cfg.learner.placement.num_gpus > 0 and torch.cuda.is_available()
    os.environ.update(
        MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
        WORLD_SIZE=str(world_size), LOCAL_RANK=cuda_local_rank(os.environ, _ray_gpu_ids()) if use_cuda else "0",
    )
    with library_stdout():  # DeepSpeed prints its shm op build with a bare print(): off unless --verbose
        deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo", verbose=False)
    return torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")


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


#: DeepSpeed's Muon optimizer module. ZeRO imports it on start (``zero.utils.is_zero_supported_optimizer``)
#: and in its gradient paths (isinstance checks), so it must import; what costs is that its
#: ``original_muon`` decorates three kernels with ``torch.compile`` at import time.
DEEPSPEED_MUON_MODULE = "deepspeed.runtime.zero.muon.muon_optimizer"


def import_deepspeed_muon_lazily() -> None:
    """Import DeepSpeed's Muon module with its ``torch.compile`` decorations deferred to each
    kernel's first call. Decorating calls ``torch.compile``, which loads ``torch._dynamo`` and
    ``torch._inductor``: most of a tiny-model Learner's start, paid by every learner rank of
    every run (and of every test that starts one), for kernels the learner never calls (its
    optimizer is AdamW). Deferred, a Muon kernel is still compiled exactly as before, on its
    first call (``torch.compile`` itself only wraps until then). A process that already
    imported the module keeps it as it is."""
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
