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

from softverify.config import TrainConfig
from softverify.grpo import clipped_surrogate, kl_penalty, masked_aggregate
from softverify.modeling import load_causal_lm, pack_sequences, token_logprobs
from softverify.types import Sample


@dataclass
class LearnBatch:
    """What one rank trains on in one step: its samples plus global normalisers."""

    samples: list[Sample]
    advantages: np.ndarray  # [len(samples)]
    total_tokens: int  # completion tokens in the whole step (all ranks)
    total_seqs: int  # sequences in the whole step (all ranks)


def shard_indices(n: int, world_size: int) -> list[list[int]]:
    """Contiguous, near-equal shards (sizes differ by at most one)."""
    base, extra = divmod(n, world_size)
    out, start = [], 0
    for r in range(world_size):
        size = base + (1 if r < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


def grad_accum_steps(cfg: TrainConfig) -> int:
    """Micro-batches per rank per pass; fixed for the run because DeepSpeed fixes it at init."""
    n = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    per_rank = math.ceil(n / cfg.learner.num_ranks)
    return max(1, math.ceil(per_rank / cfg.learner.micro_batch_size))


def deepspeed_config(cfg: TrainConfig) -> dict:
    lc = cfg.learner
    gas = grad_accum_steps(cfg)
    return {
        "train_micro_batch_size_per_gpu": lc.micro_batch_size,
        "gradient_accumulation_steps": gas,
        "train_batch_size": lc.micro_batch_size * gas * lc.num_ranks,
        "gradient_clipping": lc.grad_clip,
        "zero_optimization": {"stage": lc.zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


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

        self.cfg = cfg
        self.rank, self.world_size = rank, world_size
        torch.set_num_threads(cfg.learner.torch_threads)
        torch.manual_seed(cfg.trainer.seed)
        use_cuda = cfg.learner.num_gpus_per_rank > 0 and torch.cuda.is_available()
        os.environ.update(
            MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
            WORLD_SIZE=str(world_size), LOCAL_RANK="0" if not use_cuda else os.environ.get("LOCAL_RANK", "0"),
        )
        deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo", verbose=False)
        self.device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        model, self.tokenizer = load_causal_lm(model_path, cfg.model.dtype, cfg.model.trust_remote_code)
        if cfg.learner.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.config.use_cache = False
        self.tied = bool(getattr(model.config, "tie_word_embeddings", False))
        self.ref = None
        if cfg.algorithm.kl_coef > 0:
            self.ref, _ = load_causal_lm(model_path, cfg.model.dtype, cfg.model.trust_remote_code)
            self.ref.to(self.device).eval().requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learner.lr, weight_decay=cfg.learner.weight_decay)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=opt, config=deepspeed_config(cfg)
        )
        self.gas = grad_accum_steps(cfg)
        self.steps_done = 0

    # ------------------------------------------------------------------ training
    def _micro_batches(self, n: int) -> list[list[int]]:
        """Exactly ``gas`` micro-batches (DeepSpeed steps the optimiser at that boundary);
        trailing ones may be empty when this rank holds fewer samples than others."""
        mb = self.cfg.learner.micro_batch_size
        out = [list(range(s, min(s + mb, n))) for s in range(0, n, mb)]
        out += [[] for _ in range(self.gas - len(out))]
        return out[: self.gas]

    def train_step(self, batch: LearnBatch) -> dict[str, float]:
        ac = self.cfg.algorithm
        temp = self.cfg.rollout.temperature
        scale = self.gas * self.world_size
        self.engine.train()
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}

        def add(k: str, v: float, w: float = 1.0) -> None:
            sums[k] = sums.get(k, 0.0) + (v if k.endswith("_sum") else v * w)
            weights[k] = weights.get(k, 0.0) + w

        for _ in range(ac.epochs_per_step):
            for idx in self._micro_batches(len(batch.samples)):
                dummy = not idx  # keep collective calls aligned across ranks
                take = idx or [0]
                ss = [batch.samples[i] for i in take]
                packed = pack_sequences(
                    [s.prompt_token_ids for s in ss], [s.completion_token_ids for s in ss], self.tokenizer.pad_token_id
                ).to(self.device)
                mask = packed.loss_mask
                old = torch.zeros_like(mask)
                for b, s in enumerate(ss):
                    start = len(s.prompt_token_ids) - 1
                    old[b, start : start + len(s.behaviour_logprobs)] = torch.tensor(s.behaviour_logprobs)
                adv = torch.tensor(batch.advantages[take], dtype=torch.float32, device=self.device)
                logp, ent = token_logprobs(self.engine, packed, temp, with_entropy=True)
                pg, st = clipped_surrogate(
                    logp, old, adv, mask, ac.eps_low, ac.eps_high, ac.loss_agg, batch.total_tokens, batch.total_seqs
                )
                loss = pg
                if self.ref is not None:
                    with torch.no_grad():
                        ref_logp, _ = token_logprobs(self.ref, packed, temp)
                    kl_tok = kl_penalty(logp, ref_logp, ac.kl_estimator)
                    kl = masked_aggregate(kl_tok, mask, ac.loss_agg, batch.total_tokens, batch.total_seqs)
                    loss = loss + ac.kl_coef * kl
                    if not dummy:
                        add("kl", float(masked_aggregate(kl_tok.detach(), mask)), float(mask.sum()))
                loss = loss * scale * (0.0 if dummy else 1.0)
                self.engine.backward(loss)
                self.engine.step()
                if not dummy:
                    ntok = float(mask.sum())
                    add("pg_loss_sum", float(pg.detach()) / ac.epochs_per_step, 0.0)
                    add("clip_frac", st["clip_frac"], ntok)
                    add("ratio_mean", st["ratio_mean"], ntok)
                    add("entropy", float(masked_aggregate(ent, mask)), ntok)
        self.steps_done += 1
        # "_sum" metrics are this rank's share of a global quantity: the driver adds them up.
        out = {k: (sums[k] if k.endswith("_sum") else sums[k] / max(weights[k], 1e-12)) for k in sums}
        gn = self.engine.get_global_grad_norm()
        out["grad_norm"] = float(gn) if gn is not None else float("nan")
        out["lr"] = float(self.optimizer.param_groups[0]["lr"])
        return out

    # ------------------------------------------------------------------ weights
    def state_dict(self) -> dict[str, torch.Tensor] | None:
        """Full weights on CPU (collective under ZeRO-3: every rank must call it);
        returned by rank 0 only. Tied ``lm_head`` is dropped (the receiver re-ties it)."""
        module = self.engine.module
        if self.cfg.learner.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                sd = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if self.rank == 0 else None
        else:
            sd = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if self.rank == 0 else None
        if sd is not None and self.tied:
            sd.pop("lm_head.weight", None)
        return sd

    @torch.no_grad()
    def logprobs(self, samples: Sequence[Sample]) -> list[list[float]]:
        """Teacher-forced logprobs of the samples' completions under the current weights."""
        self.engine.eval()
        packed = pack_sequences(
            [s.prompt_token_ids for s in samples], [s.completion_token_ids for s in samples], self.tokenizer.pad_token_id
        ).to(self.device)
        lp, _ = token_logprobs(self.engine, packed, self.cfg.rollout.temperature)
        return [lp[b, len(s.prompt_token_ids) - 1 : len(s.prompt_token_ids) - 1 + len(s.completion_token_ids)].tolist()
                for b, s in enumerate(samples)]

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
        self.engine.module.save_pretrained(hf_dir, state_dict=sd, safe_serialization=True)
        self.tokenizer.save_pretrained(hf_dir)

    def load_checkpoint(self, directory: str, tag: str) -> None:
        _, client = self.engine.load_checkpoint(directory, tag=tag)
        if client is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint {tag!r} under {directory!r}")
        self.steps_done = int(client.get("steps_done", 0))
