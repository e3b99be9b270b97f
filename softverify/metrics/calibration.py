"""Calibration of probabilities: is p = 0.3 right 30% of the time? Pure numpy.

A soft verifier's p is a reward, so its calibration decides what "p for yes" pays: an
overconfident world model pays confident wrong answers. ECE is the bin-weighted gap between
mean p and the observed rate (equal-width bins); Brier is the mean squared error of p.
Each bin's rate carries a Wilson 95 % interval, so a reliability diagram shows which gaps
are noise (a bin of 12 rows) and which are not. The math is pure numpy; :func:`plot_reliability`
draws the diagram (matplotlib imported only there).
"""
from __future__ import annotations

import numpy as np


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a rate of ``k`` successes in ``n`` trials (NaN when n = 0).

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at k = 0,
    which is most bins of a rare-positive problem."""
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"successes k={k} must lie in [0, n={n}]")
    r = k / n
    den = 1 + z * z / n
    centre = (r + z * z / (2 * n)) / den
    half = z * np.sqrt(r * (1 - r) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def reliability_bins(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Per equal-width bin of p: count, mean p, observed positive rate and its Wilson 95 %
    interval (``rate_lo``, ``rate_hi``), finite p only."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(p)
    p, y = p[ok], y[ok]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        lo, hi = wilson_interval(int(y[m].sum()), int(m.sum()))
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                    "mean_p": float(p[m].mean()) if m.any() else float("nan"),
                    "rate": float(y[m].mean()) if m.any() else float("nan"), "rate_lo": lo, "rate_hi": hi})
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


def draw_reliability(ax, curves: dict[str, list[dict]], counts_ax=None) -> None:
    """Reliability diagram on ``ax``: per curve (name -> :func:`reliability_bins`), observed
    rate against mean p of the non-empty bins with Wilson intervals, the diagonal, and,
    on ``counts_ax``, the rows per bin (log scale: most rows sit in the first bin)."""
    for k, (name, bins) in enumerate(curves.items()):
        b = [x for x in bins if x["n"]]
        if not b:
            continue
        xs, ys = np.array([x["mean_p"] for x in b]), np.array([x["rate"] for x in b])
        err = np.array([[y - x["rate_lo"] for x, y in zip(b, ys)], [x["rate_hi"] - y for x, y in zip(b, ys)]])
        ax.errorbar(xs, ys, yerr=np.clip(err, 0, None), marker="o", ms=4, capsize=2, lw=1.2, color=f"C{k}", label=name)
        if counts_ax is not None:
            counts_ax.plot(xs, [x["n"] for x in b], marker=".", lw=1, color=f"C{k}")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed positive rate (95% Wilson)")
    if counts_ax is not None:
        counts_ax.set_yscale("log")
        counts_ax.set_xlim(0, 1)
        counts_ax.set_ylabel("rows per bin")
        counts_ax.set_xlabel("mean predicted p in the bin")
    else:
        ax.set_xlabel("mean predicted p in the bin")


def plot_reliability(curves: dict[str, list[dict]], path, title: str = "") -> None:
    """Save a reliability diagram (curves as in :func:`draw_reliability`) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, cax) = plt.subplots(2, 1, figsize=(6.2, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    draw_reliability(ax, curves, cax)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
