"""Reward composition: per-verifier normalisation, weights, and the two aggregation orders.

Input is the score matrix ``[n_samples, n_verifiers]`` from the verifier pool, with NaN
where a verifier abstains. Abstentions are excluded per sample: the sample's reward is
the weighted mean over the verifiers that did score it, so one verifier's silence does not
read as a zero. Weight-0 verifiers are computed and logged but never rewarded.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from softverify.learner.advantages import compute_advantages


def threshold_normalize(scores: np.ndarray, t: float | None, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """rbio1's threshold normalisation: scores below ``t`` map linearly onto [0, 0.5],
    scores at or above onto [0.5, 1], using the verifier's score range [lo, hi].

    It turns a soft probability into a reward whose midpoint is the verifier's own
    decision threshold (e.g. the world model's validation-chosen cut), so "above t" is
    rewarded as a yes even when t is far from 0.5. NaN stays NaN.
    """
    s = np.asarray(scores, dtype=np.float64)
    if t is None:
        return s
    if not lo <= t <= hi or lo >= hi:
        raise ValueError(f"threshold {t} must lie in the score range [{lo}, {hi}]")
    out = np.full_like(s, np.nan)
    below = s < t
    above = s >= t
    out[below] = 0.5 * (s[below] - lo) / max(t - lo, 1e-12)
    out[above] = 0.5 + 0.5 * (s[above] - t) / max(hi - t, 1e-12) if hi > t else 1.0
    return np.clip(out, 0.0, 1.0)  # NaN passes through clip unchanged


def weighted_mean_available(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-sample weighted mean over non-NaN columns with weight > 0; NaN if none scored."""
    s = np.asarray(scores, dtype=np.float64)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), s.shape)
    ok = ~np.isnan(s) & (w > 0)
    num = np.where(ok, s * w, 0.0).sum(axis=1)
    den = np.where(ok, w, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def enumerated_learner_values(rewards: np.ndarray, adv: np.ndarray, aggregation: str) -> np.ndarray:
    """What the enumerated estimator's learner gets per candidate from :func:`compose`'s output.

    The enumerated loss forms its own advantages, ``r - E_q[r]`` under the policy's answer
    distribution, so it takes a per-candidate reward: the weighted mean for
    ``sum_then_normalize``, and for ``normalize_then_sum`` (GDPO) the per-verifier
    group-normalised combination, which is a reward up to a per-group shift (and
    ``r - E_q[r]`` removes any shift). Without this the enumerated estimator silently ignored
    ``reward.aggregation``: a composed run was the hard + world-model run, step for step.
    (Sampled GRPO learns from the advantages themselves: :mod:`softverify.algo.sampled`.)
    """
    return rewards if aggregation == "sum_then_normalize" else adv


def compose(
    scores: np.ndarray,
    weights: Sequence[float],
    thresholds: Sequence[float | None],
    group_ids: np.ndarray,
    aggregation: str = "sum_then_normalize",
    estimator: str = "grpo",
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(rewards [n], advantages [n])``.

    - ``sum_then_normalize``: reward = weighted mean of normalised scores; advantage =
      group-normalised reward (classic GRPO).
    - ``normalize_then_sum`` (GDPO): each verifier's scores are group-normalised on their
      own, the per-verifier advantages are combined by weighted mean, and the result is
      rescaled to unit std over the batch -- so a verifier with a small score range is not
      drowned by one with a large range.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != len(weights) or len(thresholds) != len(weights):
        raise ValueError(f"scores shape {s.shape} does not match {len(weights)} weights/thresholds")
    w = np.asarray(weights, dtype=np.float64)
    normed = np.column_stack([threshold_normalize(s[:, j], thresholds[j]) for j in range(s.shape[1])]) if s.size else s
    rewards = weighted_mean_available(normed, w)
    if aggregation == "sum_then_normalize":
        adv = compute_advantages(rewards, group_ids, estimator)
    elif aggregation == "normalize_then_sum":
        per_v = np.column_stack(
            [np.where(np.isnan(normed[:, j]), np.nan, compute_advantages(normed[:, j], group_ids, estimator))
             for j in range(normed.shape[1])]
        )
        adv = np.nan_to_num(weighted_mean_available(per_v, w), nan=0.0)
        sd = adv.std()
        # Per-verifier advantages are unit-scale, so a combined std below 1e-2 means they
        # cancelled; rescaling that would blow rounding noise up into a full signal.
        if sd > 1e-2:
            adv = adv / sd
    else:
        raise ValueError(
            f"unknown aggregation {aggregation!r}; expected 'sum_then_normalize' or 'normalize_then_sum'"
        )
    return rewards, adv
