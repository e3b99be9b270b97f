"""What the training cell lines say about each gene, as features for a world model.

Most of the DE signal sits in the *target* gene (a few hub genes carry most positives),
some in the perturbation (strong knockdowns change many genes). From training rows
(pert, gene, label) we learn, per gene symbol:

- ``target_rate``: how often it is DE as a target, shrunk towards the base rate with a
  pseudo-count (rare genes do not get rates of 0 or 1 from two rows);
- ``pert_rate``: how often knocking it down changes a target (its strength);
- the counts behind both (how much to trust them).

Pure functions over pandas frames; :func:`out_of_fold_features` computes the training
rows' own features from the *other* folds (by perturbation), so a row's label never leaks
into its own features.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from softverify.bio.questions import stable_int

FEATURES = ("target_rate", "target_log_n", "pert_rate", "pert_log_n", "pert_target_rate")


@dataclass
class GeneStats:
    base_rate: float
    target: dict[str, tuple[float, int]]  # symbol -> (positives, count) as a target
    pert: dict[str, tuple[float, int]]  # symbol -> (positives, count) as a perturbation
    pseudo: float = 20.0

    @classmethod
    def fit(cls, rows: pd.DataFrame, pseudo: float = 20.0) -> "GeneStats":
        base = float(rows["label"].mean()) if len(rows) else 0.0
        t = rows.groupby("gene")["label"].agg(["sum", "count"])
        p = rows.groupby("pert")["label"].agg(["sum", "count"])
        return cls(base, {g: (float(s), int(c)) for g, s, c in zip(t.index, t["sum"], t["count"])},
                   {g: (float(s), int(c)) for g, s, c in zip(p.index, p["sum"], p["count"])}, pseudo)

    def _rate(self, table: dict, symbols) -> tuple[np.ndarray, np.ndarray]:
        sc = np.array([table.get(s, (0.0, 0)) for s in symbols], dtype=np.float64).reshape(-1, 2)
        rate = (sc[:, 0] + self.pseudo * self.base_rate) / (sc[:, 1] + self.pseudo)
        return rate, np.log1p(sc[:, 1])

    def features(self, perts, genes) -> np.ndarray:
        """``[n, len(FEATURES)]``: target rate and count of the gene, strength and count of
        the perturbation, and the perturbed gene's own rate as a target."""
        tr, tn = self._rate(self.target, genes)
        pr, pn = self._rate(self.pert, perts)
        ptr, _ = self._rate(self.target, perts)
        return np.column_stack([tr, tn, pr, pn, ptr])

    def to_json(self) -> dict:
        return {"base_rate": self.base_rate, "pseudo": self.pseudo,
                "target": {k: list(v) for k, v in self.target.items()},
                "pert": {k: list(v) for k, v in self.pert.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "GeneStats":
        return cls(float(d["base_rate"]), {k: (float(v[0]), int(v[1])) for k, v in d["target"].items()},
                   {k: (float(v[0]), int(v[1])) for k, v in d["pert"].items()}, float(d["pseudo"]))


def pert_folds(perts, k: int, seed: int = 0) -> np.ndarray:
    """Fold id per row from a seeded hash of its perturbation (rows of one knockdown share a fold)."""
    return np.array([stable_int("wm-fold", seed, p) % k for p in perts], dtype=np.int64)


def out_of_fold_features(rows: pd.DataFrame, k: int = 5, seed: int = 0, pseudo: float = 20.0) -> np.ndarray:
    """Each training row's features from the stats of the other ``k - 1`` folds."""
    folds = pert_folds(rows["pert"].to_numpy(), k, seed)
    out = np.zeros((len(rows), len(FEATURES)))
    for f in range(k):
        m = folds == f
        if m.any():
            stats = GeneStats.fit(rows.loc[~m], pseudo)
            out[m] = stats.features(rows.loc[m, "pert"].to_numpy(), rows.loc[m, "gene"].to_numpy())
    return out
