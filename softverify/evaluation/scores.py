"""Ranking metrics of a policy's forced answer score, with bootstrap intervals.

Greedy argmax metrics hide partial learning: a policy whose log p(yes) - log p(no) already
ranks DE pairs above non-DE pairs still answers "no" everywhere until the ranking crosses
zero. The forced score at the answer position is what the policy *believes*; its AUROC
and AUPRC show learning long before MCC moves. With a few hundred questions these numbers
carry a standard error of several points, so every one comes with a percentile-bootstrap
95% interval (questions resampled with replacement).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from softverify.metrics.ranking import auroc_rows, bootstrap_ci  # noqa: F401  (re-exported: they live with the per-gene metric)


def average_precision_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Average precision (area under the step precision-recall curve, as
    ``sklearn.metrics.average_precision_score``) of each row: the mean over positives i of
    the precision among all items scored >= s_i (ties share one threshold). NaN for a row
    with one class only."""
    from scipy.stats import rankdata

    y = np.atleast_2d(y).astype(np.float64)
    s = np.atleast_2d(s)
    n = y.shape[-1]
    ys = np.take_along_axis(y, np.argsort(s, axis=-1, kind="stable"), -1)
    below = np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(ys, -1)], -1)  # positives among the k lowest
    rmin = rankdata(s, method="min", axis=-1).astype(int)  # 1 + items scored strictly lower
    pos = y.sum(-1, keepdims=True)
    precision = (pos - np.take_along_axis(below, rmin - 1, -1)) / (n - rmin + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = (precision * y).sum(-1) / pos[:, 0]
    return np.where((pos[:, 0] > 0) & (pos[:, 0] < n), ap, np.nan)


def mcc_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Matthews correlation of each row's 0/1 predictions; 0 where a margin of the confusion
    matrix is empty (``sklearn.metrics.matthews_corrcoef``'s convention)."""
    y, pred = np.atleast_2d(y).astype(np.float64), np.atleast_2d(pred).astype(np.float64)
    tp, tn = (y * pred).sum(-1), ((1 - y) * (1 - pred)).sum(-1)
    fp, fn = ((1 - y) * pred).sum(-1), (y * (1 - pred)).sum(-1)
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (tp * tn - fp * fn) / den, 0.0)


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
    out: dict[str, float] = {"auroc": float(auroc_rows(y, s)[0]), "auprc": float(average_precision_rows(y, s)[0])}
    out["auroc_lo"], out["auroc_hi"] = bootstrap_ci(auroc_rows, y, s, n_boot=n_boot, seed=seed, rows=True)
    out["auprc_lo"], out["auprc_hi"] = bootstrap_ci(average_precision_rows, y, s, n_boot=n_boot, seed=seed, rows=True)
    if answers is not None:
        a = np.asarray(answers, dtype=int)
        out["mcc_lo"], out["mcc_hi"] = bootstrap_ci(mcc_rows, y, a, n_boot=n_boot, seed=seed, rows=True)
    if reference is not None:
        r = np.asarray(reference, dtype=np.float64)
        ok = np.isfinite(r) & np.isfinite(s)
        rho = spearmanr(s[ok], r[ok]).statistic if ok.sum() > 2 else float("nan")
        out["spearman_ref"] = float(rho)
    return out
