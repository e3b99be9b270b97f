"""Yes/no confusion-matrix rates: the one implementation behind every TPR/TNR/F1/MCC softverify
reports (policy evals, world-model evals), so they share one convention for empty counts.

Convention: a rate whose class is absent (TPR with no positives, TNR with no negatives) is
NaN, since there is nothing to measure; precision, F1 and MCC with a zero denominator are 0
(scikit-learn's ``zero_division=0``): a model that never says yes has no precision.
"""
from __future__ import annotations

import math

import numpy as np


def confusion_counts(y: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, tn, fp, fn) of 0/1 arrays."""
    y, pred = np.asarray(y).astype(int), np.asarray(pred).astype(int)
    return (int(((pred == 1) & (y == 1)).sum()), int(((pred == 0) & (y == 0)).sum()),
            int(((pred == 1) & (y == 0)).sum()), int(((pred == 0) & (y == 1)).sum()))


def rates(tp: int, tn: int, fp: int, fn: int) -> dict[str, float]:
    """TPR, TNR, precision, F1, MCC and balanced accuracy of one confusion matrix."""
    tpr = tp / (tp + fn) if tp + fn else float("nan")
    tnr = tn / (tn + fp) if tn + fp else float("nan")
    prec = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * prec * tpr / (prec + tpr) if (prec + tpr) and not math.isnan(tpr) else 0.0
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / denom if denom else 0.0
    both = [r for r in (tpr, tnr) if not math.isnan(r)]
    return {"tpr": tpr, "tnr": tnr, "precision": prec, "f1": f1, "mcc": mcc,
            "balanced_accuracy": float(np.mean(both)) if both else float("nan")}
