"""Sampled GRPO: ``rollout.group_size`` completions sampled per prompt, each trained with the
clipped policy gradient on its group-normalised advantage (the field's GRPO / Dr.GRPO / DAPO
family; ``algorithm.advantage`` and ``algorithm.loss_agg`` pick the variant).

Torch is imported where a learner rank first needs it: the config builds this mode while it
validates, before any model code loads.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from softverify.algo.base import Mode
from softverify.types import Sample


def answer_span_mask(tokenizer, ss: Sequence[Sample], mask):
    """1 from each completion's last ``<answer>`` on (``algorithm.answer_loss_share``), within
    ``mask``: after a forced ``<answer>`` that is the sampled answer and its closing tag, not
    the inserted tag."""
    import torch

    from softverify.task.answer import answer_token_start

    am = torch.zeros_like(mask)
    for b, s in enumerate(ss):
        start = answer_token_start(tokenizer, s.completion_token_ids)
        if start is not None:
            am[b, start : len(s.completion_token_ids)] = 1.0
    return am * mask


def sampled_loss(model, tokenizer, cfg, ss: Sequence[Sample], adv, w, total_tokens: float, total_seqs: float,
                 ref=None, device=None):
    """One micro-batch of the sampled GRPO loss (what :meth:`Sampled.learn` backpropagates):
    ``(loss, stats, completion batch, mask)``. ``mask`` is the completion mask with the tokens
    the rollout inserted (``Sample.forced_mask``) zeroed, so they carry no policy gradient, no
    entropy and no KL; ``total_tokens`` must count sampled tokens only
    (``Sample.n_sampled``)."""
    import torch

    from softverify.algo.encode import completion_batch
    from softverify.learner.losses import policy_loss
    from softverify.learner.seqbatch import old_logprobs, sampled_mask

    ac = cfg.algorithm
    pad = tokenizer.pad_token_id
    cb = completion_batch(model, cfg, pad, ss, with_entropy=True, entropy_grad=ac.entropy_coef > 0, device=device)
    mask = cb.mask * sampled_mask(ss, cb.mask.shape[1], cb.mask.device)
    old = old_logprobs(ss, mask.shape[1], device)
    am = answer_span_mask(tokenizer, ss, mask) if ac.answer_loss_share > 0 and cfg.prompt.style == "cot" else None
    ref_logp = None
    if ref is not None:
        with torch.no_grad():
            ref_logp = completion_batch(ref, cfg, pad, ss, device=device).logp
    loss, st = policy_loss(
        cb.logp, old, adv, mask, eps_low=ac.eps_low, eps_high=ac.eps_high, agg=ac.loss_agg,
        total_tokens=total_tokens, total_seqs=total_seqs, weights=w, answer_mask=am,
        answer_share=ac.answer_loss_share, entropy=cb.entropy, entropy_coef=ac.entropy_coef,
        ref_logp=ref_logp, kl_coef=ac.kl_coef, kl_estimator=ac.kl_estimator)
    return loss, st, cb, mask


class Sampled(Mode):
    name = "sample"

    def launch(self, worker, rows: Sequence[dict[str, Any]], sampling, weights, group_ids: Sequence[int]):
        return worker.generate.remote(rows, self.cfg.rollout.group_size, sampling, weights, group_ids)

    def learner_values(self, rewards: np.ndarray, adv: np.ndarray) -> np.ndarray:
        """The advantages."""
        return adv

    def shard_unit(self, n: int, world: int) -> int:
        """Whole groups (a group's prompt is encoded once), split when there are fewer groups
        than ranks, so no rank idles."""
        spp = self.samples_per_prompt
        return spp if n % spp == 0 and n // spp >= world else 1

    def learn(self, rank, batch) -> dict[str, float]:
        """Exactly ``rank.gas`` micro-batches per epoch (DeepSpeed steps the optimiser at that
        boundary; some may be empty when merging identical sequences left this rank fewer than
        ``gas``); which sequences share one is ``learner.micro_batch_order``, the loss is the
        same either way (:mod:`softverify.learner.microbatch`)."""
        import torch

        from softverify.learner.losses import masked_aggregate
        from softverify.learner.microbatch import plan_micro_batches, token_counts
        from softverify.learner.seqbatch import merge_identical

        ac, lc = self.cfg.algorithm, self.cfg.learner
        scale = rank.gas * rank.world_size
        rank.engine.train()
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}

        def add(k: str, v: float, w: float = 1.0) -> None:
            sums[k] = sums.get(k, 0.0) + (v if k.endswith("_sum") else v * w)
            weights[k] = weights.get(k, 0.0) + w

        samples, advs = list(batch.samples), np.asarray(batch.values, dtype=np.float64)
        mult = np.ones(len(samples))
        if lc.merge_identical and samples:
            samples, advs, mult = merge_identical(samples, advs)
        add("learn_seqs_sum", float(len(samples)), 0.0)  # sequences actually encoded (after merging)
        prompts, comps = [s.prompt_token_ids for s in samples], [s.completion_token_ids for s in samples]
        shared = lc.shared_prompt and not lc.gradient_checkpointing
        plan = plan_micro_batches(prompts, comps, rank.gas, lc.micro_batch_order, shared)
        # what the forward passes process (padding included) against the tokens that are not padding
        processed, real = token_counts(prompts, comps, plan, shared)
        add("learn_encoded_tokens_sum", float(processed * ac.epochs_per_step), 0.0)
        add("learn_real_tokens_sum", float(real * ac.epochs_per_step), 0.0)
        for _ in range(ac.epochs_per_step):
            for idx in plan:
                dummy = not idx  # keep collective calls aligned across ranks
                ss = [samples[i] for i in idx] if idx else [rank.dummy_sample()]
                adv = torch.tensor(advs[idx] if idx else [0.0], dtype=torch.float32, device=rank.device)
                w = torch.tensor(mult[idx] if idx else [1.0], dtype=torch.float32, device=rank.device)
                with rank.autocast():
                    loss, st, cb, mask = sampled_loss(rank.engine, rank.tokenizer, self.cfg, ss, adv, w,
                                                      batch.total_tokens, batch.total_seqs, ref=rank.ref,
                                                      device=rank.device)
                pg = st["pg"]
                if "kl" in st and not dummy:
                    add("kl", float(st["kl"]), float((mask * w[:, None]).sum()))
                loss = loss * scale * (0.0 if dummy else 1.0)
                rank.engine.backward(loss)
                rank.micro_step()
                if not dummy:
                    ntok = float((mask * w[:, None]).sum())
                    add("pg_loss_sum", float(pg.detach()) / ac.epochs_per_step, 0.0)
                    add("clip_frac", st["clip_frac"], ntok)
                    add("ratio_mean", st["ratio_mean"], ntok)
                    add("logp_gap", st["logp_gap"], ntok)
                    add("entropy", float(masked_aggregate(cb.entropy.detach(), mask, weights=w)), ntok)
        # "_sum" metrics are this rank's share of a global quantity: the driver adds them up.
        return rank.finish_step({k: (sums[k] if k.endswith("_sum") else sums[k] / max(weights[k], 1e-12))
                                 for k in sums})
