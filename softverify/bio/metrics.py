"""Binary-classification metrics for ~13%-positive DE labels (accuracy alone is meaningless).

Predictions may contain NaN (no embedding for a gene): the metrics are computed on the
finite rows beside ``coverage``, and again on all rows with the uncovered ones answered
"no", so an abstaining model cannot look better by skipping the hard rows unnoticed.
"""
from __future__ import annotations

import numpy as np

from softverify.metrics.confusion import confusion_counts, rates


def best_mcc_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """The probability cut that maximises MCC (scanned over quantiles of ``p``)."""
    from sklearn.metrics import matthews_corrcoef

    ok = np.isfinite(p)
    p, y = p[ok], y[ok]
    if len(p) == 0 or len(np.unique(y)) < 2:
        return 0.5
    cands = np.unique(np.quantile(p, np.linspace(0.5, 0.995, 100)))
    scores = [matthews_corrcoef(y, (p >= t).astype(int)) for t in cands]
    return float(cands[int(np.argmax(scores))])


def _at_threshold(p: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    """Ranking and thresholded metrics on finite ``p`` (NaN when one class is missing)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if len(p) == 0 or len(np.unique(y)) < 2:
        return {"auroc": float("nan"), "auprc": float("nan"), "mcc": float("nan")}
    pred = (p >= threshold).astype(int)
    return {
        "positive_rate": float(y.mean()),
        "auroc": float(roc_auc_score(y, p)),
        "auprc": float(average_precision_score(y, p)),
        **rates(*confusion_counts(y, pred)),  # both classes are present here: every rate is defined
    }


def binary_metrics(p: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, AUPRC, MCC/F1/TPR/TNR/balanced accuracy at ``threshold``.

    The top-level figures are on the *covered* rows (finite ``p``), the model's quality where
    it answers. ``all_rows`` holds the same metrics on every row with the uncovered ones
    answered "no" (p = 0, below any threshold): what a user of the model gets. Without it a
    one-hot model covering 37 % of the rows reports a better MCC than a GO model covering
    98.5 %, because it skips the hard rows.
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y).astype(int)
    ok = np.isfinite(p)
    out: dict = {"n": int(len(p)), "coverage": float(ok.mean()) if len(p) else 0.0}
    out.update(_at_threshold(p[ok], y[ok], threshold))
    out["threshold"] = float(threshold)
    out["all_rows"] = {"uncovered_as": "no (p = 0)",
                       **_at_threshold(np.where(ok, p, 0.0), y, max(threshold, np.nextafter(0.0, 1.0)))}
    return out
