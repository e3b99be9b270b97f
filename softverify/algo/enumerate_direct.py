"""The enumerated estimator in the direct style: every answer of a closed set
(``algorithm.answer_candidates``) is a completion of every prompt, scored by the verifiers,
and the loss is the exact expected policy gradient over that set
(:func:`softverify.learner.losses.enumerated_loss`): the large-group limit of GRPO, with no sampling
and nothing generated during training.

Torch is imported where a learner rank first needs it: the config builds this mode while it
validates, before any model code loads.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from softverify.algo.base import Mode
from softverify.rewards import enumerated_learner_values
from softverify.types import Sample


class EnumerateDirect(Mode):
    name = "enumerate"
    enumerates = True
    samples_during_training = False  # the candidates are rendered, not generated

    @property
    def n_candidates(self) -> int:
        return len(self.cfg.algorithm.answer_candidates)

    @property
    def samples_per_prompt(self) -> int:
        """Every candidate answer."""
        return self.n_candidates

    # ------------------------------------------------------------------ driver side
    def launch(self, worker, rows: Sequence[dict[str, Any]], sampling, weights, group_ids: Sequence[int]):
        return worker.candidates.remote(rows, self.cfg.algorithm.answer_candidates, group_ids)

    def learner_values(self, rewards: np.ndarray, adv: np.ndarray) -> np.ndarray:
        """Each candidate's reward (the loss forms ``r - E_q[r]`` itself), see
        :func:`softverify.rewards.enumerated_learner_values`."""
        return enumerated_learner_values(rewards, adv, self.cfg.reward.aggregation)

    def shard_unit(self, n: int, world: int) -> int:
        """Whole prompts: the loss needs a prompt's candidates on one rank."""
        spp = self.samples_per_prompt
        if n % spp:
            raise ValueError(f"enumerated batch of {n} samples is not whole prompts of {spp}")
        return spp

    def logged_per_step(self) -> int:
        """Every candidate of the first question, so each line can carry the policy's
        probability of its candidate."""
        return self.n_candidates

    # ------------------------------------------------------------------ learner side
    def encode(self, model, tokenizer, ss: Sequence[Sample], device=None):
        """The micro-batch's completion logprobs (the policy's, and the reference's for the KL:
        the same path)."""
        from softverify.algo.encode import completion_batch

        return completion_batch(model, self.cfg, tokenizer.pad_token_id, ss, device=device)

    def answer_span(self, tokenizer, ss: Sequence[Sample], cb):
        """``[B, C]``: the tokens of each row that are its candidate answer."""
        return cb.mask

    def answer_loss(self, model, tokenizer, ss: Sequence[Sample], rewards, total_seqs: float, ref=None, device=None):
        """The exact expected gradient over the closed set per answer context
        (:func:`softverify.learner.losses.enumerated_loss`, with ``entropy_coef`` and ``kl_coef`` over the
        answer set): ``(loss, raw stats, float stats, completion batch, span, reference
        logprobs or None)``."""
        import torch

        from softverify.learner.losses import enumerated_loss

        ac, K = self.cfg.algorithm, self.n_candidates
        cb = self.encode(model, tokenizer, ss, device)
        span = self.answer_span(tokenizer, ss, cb)
        ctx = torch.arange(len(ss), device=cb.mask.device) // K
        ref_lp = None
        if ref is not None and ac.kl_coef > 0:
            with torch.no_grad():
                ref_lp = self.encode(ref, tokenizer, ss, device).logp
        loss, st = enumerated_loss((cb.logp * span).sum(-1), rewards, ctx, advantage=ac.advantage,
                                   total_groups=total_seqs / K, entropy_coef=ac.entropy_coef, kl_coef=ac.kl_coef,
                                   ref_seq_logp=None if ref_lp is None else (ref_lp * span).sum(-1))
        out = {"pg": float(st["pg"]), "entropy": float(st["entropy"]),
               "policy_expected_reward": float(st["expected_reward"])}
        if "kl" in st:
            out["kl"] = float(st["kl"])
        return loss, st, out, cb, span, ref_lp

    def micro_loss(self, model, tokenizer, ss: Sequence[Sample], rewards, total_tokens: float, total_seqs: float,
                   ref=None, device=None):
        """One micro-batch of whole prompts: ``(loss, stats)``. ``ss`` cycles through the K
        candidates of each answer context; ``total_seqs`` / ``total_tokens`` are the step's
        sequences and sampled tokens (all ranks), so micro-batch losses add up. Stats (floats):
        ``pg`` (this micro-batch's share of the step's answer loss), and per context means
        ``entropy``, ``policy_expected_reward``, ``kl``."""
        loss, _, out, *_ = self.answer_loss(model, tokenizer, ss, rewards, total_seqs, ref, device)
        return loss, out

    def dummy_prompt(self, rank) -> list[Sample]:
        """One prompt's worth of rows for a rank with no prompt left in a micro-batch (its
        loss is multiplied by 0; it keeps DeepSpeed's collectives aligned across ranks)."""
        return [rank.dummy_sample()] * self.n_candidates

    def learn(self, rank, batch) -> dict[str, float]:
        """``batch.values`` holds each candidate's reward; consecutive runs of
        ``samples_per_prompt`` samples are one prompt (the trainer and the learner group keep
        them together), see :meth:`micro_loss`. Micro-batches split between prompts."""
        import torch

        from softverify.learner.microbatch import contiguous_split

        K, U = self.n_candidates, self.samples_per_prompt
        samples, rewards = list(batch.samples), np.asarray(batch.values, dtype=np.float64)
        if len(samples) % U:
            raise ValueError(f"enumerated batch of {len(samples)} samples is not whole prompts of {U} samples "
                             f"({K} candidates each)")
        scale = rank.gas * rank.world_size
        rank.engine.train()
        sums: dict[str, float] = {}
        n_ctx = 0
        for pidx in contiguous_split(len(samples) // U, rank.gas):
            idx = [p * U + j for p in pidx for j in range(U)]
            ss = [samples[i] for i in idx] if idx else self.dummy_prompt(rank)
            r = torch.tensor(rewards[idx] if idx else [0.0] * U, dtype=torch.float32, device=rank.device)
            with rank.autocast():
                loss, st = self.micro_loss(rank.engine, rank.tokenizer, ss, r, batch.total_tokens,
                                           batch.total_seqs, ref=rank.ref, device=rank.device)
            rank.engine.backward(loss * scale * (1.0 if idx else 0.0))
            rank.micro_step()
            if idx:
                g = len(idx) // K
                sums["pg_loss_sum"] = sums.get("pg_loss_sum", 0.0) + st.pop("pg")  # this micro-batch's share
                for k, v in st.items():
                    sums[k] = sums.get(k, 0.0) + v * g
                n_ctx += g
        out = {"learn_seqs_sum": float(len(samples)), "pg_loss_sum": sums.pop("pg_loss_sum", 0.0),
               "entropy": 0.0, "policy_expected_reward": 0.0}
        out.update({k: v / max(n_ctx, 1) for k, v in sums.items()})
        return rank.finish_step(out)
