"""Ranking metrics of a policy's forced answer score, with bootstrap intervals.

Greedy argmax metrics hide partial learning: a policy whose log p(yes) - log p(no) already
ranks DE pairs above non-DE pairs still answers "no" everywhere until the ranking crosses
zero. The forced score at the answer position is what the policy *believes*; its AUROC
and AUPRC show learning long before MCC moves. With a few hundred questions these numbers
carry a standard error of several points, so every one comes with a percentile-bootstrap
95% interval (questions resampled with replacement).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def _auprc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def _mcc(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(y, pred))


def bootstrap_ci(stat: Callable[..., float], *arrays: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``stat(*arrays)`` over ``n_boot`` resamples of the rows.
    Resamples where the statistic is undefined (NaN, e.g. one class only) are dropped."""
    n = len(arrays[0])
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        v = stat(*(a[idx] for a in arrays))
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return float(lo), float(hi)


def score_metrics(labels: Sequence[int], scores: Sequence[float], answers: Sequence[int] | None = None,
                  reference: Sequence[float] | None = None, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """AUROC and AUPRC of ``scores`` (higher = "yes") against ``labels`` with 95% intervals;
    the MCC of ``answers`` (0/1) with its interval when given; the Spearman correlation of
    the scores with ``reference`` (e.g. the world model's p) where both are finite."""
    from scipy.stats import spearmanr

    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    out: dict[str, float] = {"auroc": _auroc(y, s), "auprc": _auprc(y, s)}
    out["auroc_lo"], out["auroc_hi"] = bootstrap_ci(_auroc, y, s, n_boot=n_boot, seed=seed)
    out["auprc_lo"], out["auprc_hi"] = bootstrap_ci(_auprc, y, s, n_boot=n_boot, seed=seed)
    if answers is not None:
        a = np.asarray(answers, dtype=int)
        out["mcc_lo"], out["mcc_hi"] = bootstrap_ci(_mcc, y, a, n_boot=n_boot, seed=seed)
    if reference is not None:
        r = np.asarray(reference, dtype=np.float64)
        ok = np.isfinite(r) & np.isfinite(s)
        rho = spearmanr(s[ok], r[ok]).statistic if ok.sum() > 2 else float("nan")
        out["spearman_ref"] = float(rho)
    return out
