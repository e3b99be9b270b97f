"""Calibration of probabilities: is p = 0.3 right 30% of the time? Pure numpy.

A soft verifier's p is a reward, so its calibration decides what "p for yes" pays: an
overconfident world model pays confident wrong answers. ECE is the bin-weighted gap between
mean p and the observed rate (equal-width bins); Brier is the mean squared error of p.
"""
from __future__ import annotations

import numpy as np


def reliability_bins(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Per equal-width bin of p: count, mean p, observed positive rate (finite p only)."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(p)
    p, y = p[ok], y[ok]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                    "mean_p": float(p[m].mean()) if m.any() else float("nan"),
                    "rate": float(y[m].mean()) if m.any() else float("nan")})
    return out


def expected_calibration_error(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    bins = reliability_bins(p, y, n_bins)
    n = sum(b["n"] for b in bins)
    if n == 0:
        return float("nan")
    return float(sum(b["n"] * abs(b["mean_p"] - b["rate"]) for b in bins if b["n"]) / n)


def brier_score(p: np.ndarray, y: np.ndarray) -> float:
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(p)
    return float(np.mean((p[ok] - y[ok]) ** 2)) if ok.any() else float("nan")
