"""GRPO losses as pure torch functions: clipped surrogate, KL estimators, aggregation, the
enumerated (closed answer set) loss.

Nothing here knows about models, Ray or DeepSpeed. Every function is tested against
hand-computed numbers in ``tests/test_grpo.py``. The group advantages these losses take live in
:mod:`softverify.learner.advantages` (numpy only), so the processes that only score and normalise
rewards (the verifier host, the driver) do not import torch. ``KL_ESTIMATORS`` maps config names
to functions so a new variant is one entry.
"""
from __future__ import annotations

from typing import Callable

import torch

# --------------------------------------------------------------------------- aggregation


def masked_aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token_mean",
    total_tokens: float | None = None,
    total_seqs: float | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce per-token ``values [B, T]`` under ``mask [B, T]`` to a scalar.

    - ``token_mean``: ``sum(v * m) / total_tokens`` (every token weighs the same);
    - ``seq_mean``: mean over sequences of each sequence's token mean.

    ``total_tokens`` / ``total_seqs`` let a caller that splits one logical batch into
    micro-batches and ranks divide by the *global* count, so the summed gradients equal
    the full-batch gradient exactly. They default to this batch's own counts.

    ``weights [B]``: sequence multiplicities (a merged sequence stands for ``w`` identical
    copies, see :func:`softverify.learner.seqbatch.merge_identical`); its terms count ``w`` times,
    in the sums and in the default denominators.
    """
    mask = mask.to(values.dtype)
    w = torch.ones(values.shape[0], dtype=values.dtype, device=values.device) if weights is None else weights.to(values.dtype)
    if mode == "token_mean":
        wm = mask * w.unsqueeze(-1)
        denom = wm.sum() if total_tokens is None else torch.as_tensor(total_tokens, dtype=values.dtype)
        return (values * wm).sum() / denom.clamp(min=1.0)
    if mode == "seq_mean":
        per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        denom = w.sum() if total_seqs is None else total_seqs
        return (per_seq * w).sum() / max(float(denom), 1.0)
    raise ValueError(f"unknown loss aggregation {mode!r}; expected 'token_mean' or 'seq_mean'")


# --------------------------------------------------------------------------- policy loss


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    agg: str = "token_mean",
    total_tokens: float | None = None,
    total_seqs: float | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO/GRPO clipped objective with separate lower/upper clip (DAPO "clip-higher").

    ``loss_t = -min(ratio_t * A, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A)`` with
    ``ratio_t = exp(logp_t - old_logp_t)``; ``advantages`` is per sequence ``[B]`` and is
    broadcast over tokens; ``weights`` are sequence multiplicities (see
    :func:`masked_aggregate`). Returns the aggregated loss and detached stats.
    """
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    loss = masked_aggregate(per_token, mask, agg, total_tokens, total_seqs, weights)
    with torch.no_grad():
        m = mask.to(ratio.dtype)
        n = m.sum().clamp(min=1.0)
        was_clipped = (clipped < unclipped).to(ratio.dtype)  # min picked the clipped branch
        stats = {
            "clip_frac": float((was_clipped * m).sum() / n),
            "ratio_mean": float((ratio * m).sum() / n),
            # mean |log pi - log mu|: how far the learner's policy is from the one that sampled
            # (staleness, a lower-precision rollout engine, kernel differences)
            "logp_gap": float(((logp - old_logp).abs() * m).sum() / n),
            "ratio_max": float((ratio * m + (1 - m) * -1e9).max()) if m.any() else 1.0,
        }
    return loss, stats


# --------------------------------------------------------------------------- KL


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Unbiased, high-variance estimator: ``log p - log p_ref``."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3: ``exp(ref - logp) - (ref - logp) - 1`` (>= 0, low variance)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"k1": kl_k1, "k3": kl_k3}


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[estimator](logp, ref_logp)


# --------------------------------------------------------------------------- the whole loss


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    agg: str = "token_mean",
    total_tokens: float | None = None,
    total_seqs: float | None = None,
    weights: torch.Tensor | None = None,
    answer_mask: torch.Tensor | None = None,
    answer_share: float = 0.0,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
    """Everything the learner minimises for one micro-batch:

    ``(1 - s) * PG(all tokens) + s * PG(answer span, mean per sequence)
    - entropy_coef * H + kl_coef * KL(policy || reference)``

    where PG is :func:`clipped_surrogate`, ``s = answer_share`` (applied when an
    ``answer_mask`` is given), H and KL use the same aggregation and global denominators as
    PG. Returns the loss and ``{"pg", "kl", ...clip stats}`` (pg/kl as tensors, detached).
    """
    pg, stats = clipped_surrogate(logp, old_logp, advantages, mask, eps_low, eps_high, agg, total_tokens, total_seqs,
                                  weights)
    loss = pg
    if answer_mask is not None and answer_share > 0:
        pg_ans, _ = clipped_surrogate(logp, old_logp, advantages, answer_mask, eps_low, eps_high, "seq_mean",
                                      total_tokens, total_seqs, weights)
        loss = (1 - answer_share) * pg + answer_share * pg_ans
    if entropy is not None and entropy_coef > 0:
        loss = loss - entropy_coef * masked_aggregate(entropy, mask, agg, total_tokens, total_seqs, weights)
    out: dict[str, torch.Tensor | float] = {"pg": pg.detach(), **stats}
    if ref_logp is not None and kl_coef > 0:
        kl_tok = kl_penalty(logp, ref_logp, kl_estimator)
        loss = loss + kl_coef * masked_aggregate(kl_tok, mask, agg, total_tokens, total_seqs, weights)
        out["kl"] = masked_aggregate(kl_tok.detach(), mask, weights=weights)
    return loss, out


# --------------------------------------------------------------------------- closed answer sets


def _group_log_softmax(x: torch.Tensor, inv: torch.Tensor, G: int) -> torch.Tensor:
    """``log softmax`` of ``x`` within each of ``G`` groups (``inv[b]`` = row b's group),
    max-shifted per group for stability."""
    m = torch.full((G,), float("-inf"), dtype=x.dtype, device=x.device).scatter_reduce(0, inv, x, reduce="amax")
    lse = m + torch.log(torch.zeros_like(m).index_add(0, inv, torch.exp(x - m[inv])))
    return x - lse[inv]


def enumerated_loss(
    seq_logp: torch.Tensor,
    rewards: torch.Tensor,
    groups: torch.Tensor,
    *,
    advantage: str = "grpo",
    total_groups: float | None = None,
    entropy_coef: float = 0.0,
    ref_seq_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Exact policy gradient when every answer a prompt may get is in a small closed set
    (the direct style's yes/no): no sampling, so no sampling noise.

    ``seq_logp[b]`` is log pi(candidate b | prompt) summed over its tokens; rows sharing a
    ``groups`` id are the candidates of one prompt. Over them ``q = softmax(seq_logp)`` is
    the policy restricted to the closed set, and per prompt

    ``loss = -sum_a sg(q_a) * A_a * log q_a - entropy_coef * H(q) + kl_coef * KL(q || q_ref)``

    with ``A_a = r_a - sum_b q_b r_b`` ('drgrpo'), divided by the reward's std under q
    ('grpo'), all of ``A`` detached. Its gradient is exactly E_{a~q}[A_a grad log q_a],
    the expectation of what sampled GRPO estimates from a group (the large-group limit),
    and H and KL are exact too. Losses are summed over prompts and divided by
    ``total_groups`` (the prompts of the whole step, all ranks) so micro-batches add up.
    """
    if advantage not in ("grpo", "drgrpo"):
        raise ValueError(f"unknown advantage {advantage!r}; expected 'grpo' or 'drgrpo'")
    if not (seq_logp.shape == rewards.shape == groups.shape) or seq_logp.dim() != 1:
        raise ValueError(f"seq_logp, rewards and groups must be equal-length vectors; got {tuple(seq_logp.shape)}, "
                         f"{tuple(rewards.shape)}, {tuple(groups.shape)}")
    uniq, inv = torch.unique(groups, return_inverse=True)
    G = len(uniq)
    logq = _group_log_softmax(seq_logp, inv, G)
    q = logq.exp()
    with torch.no_grad():
        qd = q.detach()
        base = torch.zeros(G, dtype=qd.dtype, device=qd.device).index_add(0, inv, qd * rewards)
        adv = rewards - base[inv]
        if advantage == "grpo":
            std = torch.zeros(G, dtype=qd.dtype, device=qd.device).index_add(0, inv, qd * adv**2).sqrt()
            adv = adv / (std[inv] + eps)
    denom = max(float(total_groups if total_groups is not None else G), 1.0)
    pg = -(qd * adv * logq).sum() / denom
    ent_g = torch.zeros(G, dtype=q.dtype, device=q.device).index_add(0, inv, -q * logq)
    loss = pg - entropy_coef * ent_g.sum() / denom if entropy_coef > 0 else pg
    out: dict[str, torch.Tensor] = {"pg": pg.detach(), "entropy": ent_g.detach().mean(),
                                    "expected_reward": base.mean(),  # E_q[r] per prompt, before this update
                                    "group_expected_reward": base}  # the same per group (sorted group ids)
    if ref_seq_logp is not None and kl_coef > 0:
        ref_logq = _group_log_softmax(ref_seq_logp, inv, G)
        kl_g = torch.zeros(G, dtype=q.dtype, device=q.device).index_add(0, inv, q * (logq - ref_logq))
        loss = loss + kl_coef * kl_g.sum() / denom
        out["kl"] = kl_g.detach().mean()
    return loss, out
