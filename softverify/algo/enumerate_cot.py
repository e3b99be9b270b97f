"""The enumerated estimator in the CoT style: ``rollout.group_size`` reasonings sampled per
prompt, each closed and followed by every candidate answer. The answers are trained exactly
as in the direct style (:class:`~softverify.algo.enumerate_direct.EnumerateDirect`); the
reasonings get a sampled policy gradient whose advantage is each reasoning's exact
``E_q[r]`` against its prompt's other reasonings
(:func:`softverify.learner.advantages.reasoning_advantages`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from softverify.algo.enumerate_direct import EnumerateDirect
from softverify.types import Sample


def candidate_span_mask(ss: Sequence[Sample], cand_len: Sequence[int], K: int, mask):
    """``[B, C]``: 1 on each enumerated completion's candidate answer, the last
    ``cand_len[b % K]`` tokens of row b (rows cycle through the K candidates, see
    :func:`softverify.actors.rollout.enumerated_turns`); within ``mask``."""
    import torch

    span = torch.zeros_like(mask)
    for b, s in enumerate(ss):
        n = len(s.completion_token_ids)
        span[b, max(n - cand_len[b % K], 0): n] = 1.0
    return span * mask


class EnumerateCoT(EnumerateDirect):
    name = "enumerate"
    samples_during_training = True  # the reasonings are sampled with the current policy

    @property
    def samples_per_prompt(self) -> int:
        """Every candidate after each sampled reasoning."""
        return self.n_candidates * self.cfg.rollout.group_size

    def check(self) -> None:
        ro = self.cfg.rollout
        if ro.force_answer:
            raise ValueError("rollout.force_answer=true with algorithm.estimator='enumerate' in the CoT style: "
                             "the enumerated estimator already closes every reasoning for its answer and scores "
                             "every candidate after it; set rollout.force_answer=false")
        if not ro.stop:
            raise ValueError("algorithm.estimator='enumerate' in the CoT style needs rollout.stop (its first entry, "
                             "e.g. '</answer>', closes every candidate answer); rollout.stop is empty")

    # ------------------------------------------------------------------ driver side
    def launch(self, worker, rows: Sequence[dict[str, Any]], sampling, weights, group_ids: Sequence[int]):
        return worker.reasoned_candidates.remote(rows, self.cfg.rollout.group_size, sampling,
                                                 self.cfg.algorithm.answer_candidates, weights, group_ids)

    # ------------------------------------------------------------------ learner side
    def _candidate_lengths(self, tokenizer) -> list[int]:
        """Each candidate's token count (candidate + closing stop): tokenised once for the
        rank's tokenizer, not on every encode and span of every micro-batch."""
        held = getattr(self, "_cand_len", None)  # (tokenizer, lengths): the reference keeps the key alive
        if held is None or held[0] is not tokenizer:
            from softverify.task.answer import candidate_ids

            held = (tokenizer, [len(c) for c in candidate_ids(tokenizer, self.cfg.algorithm.answer_candidates,
                                                               self.cfg.rollout.stop[0])])
            self._cand_len = held
        return held[1]

    def encode(self, model, tokenizer, ss: Sequence[Sample], device=None):
        """The reasoning encoded once, its K candidates after it (unless the shared-prompt path
        is off or gradient checkpointing is on)."""
        lc = self.cfg.learner
        if not (lc.shared_prompt and not lc.gradient_checkpointing):
            return super().encode(model, tokenizer, ss, device)
        from softverify.algo.encode import shared_prefix_min
        from softverify.learner.seqbatch import completion_logprobs_enumerated

        return completion_logprobs_enumerated(model, ss, self.n_candidates, self._candidate_lengths(tokenizer),
                                              tokenizer.pad_token_id, self.cfg.rollout.temperature, device=device,
                                              min_shared=shared_prefix_min(self.cfg))

    def answer_span(self, tokenizer, ss: Sequence[Sample], cb):
        return candidate_span_mask(ss, self._candidate_lengths(tokenizer), self.n_candidates, cb.mask)

    def micro_loss(self, model, tokenizer, ss: Sequence[Sample], rewards, total_tokens: float, total_seqs: float,
                   ref=None, device=None):
        """The answer loss plus the reasonings': their tokens (each context's sampled ones,
        taken once from its first candidate row) are trained with the clipped ratio against
        their behaviour logprobs, aggregated by ``algorithm.loss_agg`` over the step's
        reasoning tokens (``total_tokens / K``), with token KL when ``kl_coef > 0``. Stats add
        ``reasoning/pg_loss``, ``reasoning/clip_frac``, ``reasoning/adv_abs_mean``."""
        import torch

        from softverify.learner.advantages import reasoning_advantages
        from softverify.learner.losses import policy_loss
        from softverify.learner.seqbatch import old_logprobs, sampled_mask

        ac, K = self.cfg.algorithm, self.n_candidates
        loss, st, out, cb, span, ref_lp = self.answer_loss(model, tokenizer, ss, rewards, total_seqs, ref, device)
        U = self.samples_per_prompt
        n_ctx = len(ss) // K
        adv_ctx = reasoning_advantages(st["group_expected_reward"].cpu().numpy(), np.arange(n_ctx) // (U // K),
                                       ac.advantage)
        first = (torch.arange(len(ss), device=cb.mask.device) % K == 0).to(cb.mask.dtype)
        mask = cb.mask * sampled_mask(ss, cb.mask.shape[1], cb.mask.device) * (1.0 - span) * first[:, None]
        adv = torch.tensor(np.repeat(adv_ctx, K), dtype=cb.logp.dtype, device=cb.logp.device)
        rl, rst = policy_loss(cb.logp, old_logprobs(ss, mask.shape[1], cb.logp.device), adv, mask,
                              eps_low=ac.eps_low, eps_high=ac.eps_high, agg=ac.loss_agg,
                              total_tokens=total_tokens / K, total_seqs=total_seqs / K, ref_logp=ref_lp,
                              kl_coef=ac.kl_coef, kl_estimator=ac.kl_estimator)
        out.update({"reasoning/pg_loss": float(rst["pg"]), "reasoning/clip_frac": rst["clip_frac"],
                    "reasoning/adv_abs_mean": float(np.abs(adv_ctx).mean())})
        return loss + rl, out

    def dummy_prompt(self, rank) -> list[Sample]:
        """A one-token prompt and a one-token head before each candidate: the layout the
        enumerated encoding expects."""
        from softverify.task.answer import candidate_ids

        pad = rank.tokenizer.pad_token_id
        cands = candidate_ids(rank.tokenizer, self.cfg.algorithm.answer_candidates, self.cfg.rollout.stop[0])
        rows = [cands[j % len(cands)] for j in range(self.samples_per_prompt)]
        return [Sample(prompt_id="", prompt="", completion="", prompt_token_ids=[pad], completion_token_ids=[pad] + c,
                       behaviour_logprobs=[0.0] * (1 + len(c)), forced_mask=[0] + [1] * len(c)) for c in rows]
