"""What one cell line's screen says about a pair (A, B), as features that carry to another line.

PerturbQA's test perturbations were mostly screened in the other cell lines too, so a model
for a line it never saw can ask, of each other line: how often is B DE there, how strong a
knockdown is A there, was this very pair DE there -- and, through a gene embedding, does
knocking A down there move genes *like* B, and is B moved there by knockdowns *like* A. The
last two are what the plain rates cannot say: they rank knockdowns within one target gene
(PerturbQA's per-gene AUROC), which is where the rates are blind.

A :class:`LineProfile` holds one line's statistics; :meth:`LineProfile.features` turns any
rows (pert, gene) into the ``PROFILE_FEATURES`` columns from that line alone. A cross-line
world model (:mod:`softverify.bio.gbdt_worldmodel`, ``features='cross_line'``) trains on each
training line's rows with features from the *other* training lines' profiles -- the situation
it meets on a held-out line -- and averages its predictions over every training line's
profile at inference.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from softverify.bio.embeddings import GeneEmbedding
from softverify.bio.gene_stats import FEATURES, GeneStats

PROFILE_FEATURES = (*FEATURES, "pair_rate", "pair_log_n", "near_targets", "near_movers")


def unit_rows(embedding: GeneEmbedding, symbols) -> np.ndarray:
    """Unit-length embedding rows of ``symbols``; NaN rows where a gene has no (or a zero) vector."""
    m = embedding.matrix(list(symbols)).astype(np.float64)
    n = np.linalg.norm(m, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, m / n, np.nan)


def _group_mean(vectors: np.ndarray, keys: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per key, the mean of its rows' vectors, NaN rows skipped (a key with none: NaN)."""
    df = pd.DataFrame(vectors)
    mean = df.groupby(keys).mean()
    return [str(k) for k in mean.index], mean.to_numpy(np.float64)


@dataclass
class LineProfile:
    cell_line: str
    stats: GeneStats
    pairs: pd.DataFrame  # columns pert, gene, pos, n: the pair's DE count and measurements in this line
    target_keys: list[str]  # knockdowns A with a DE target here ...
    target_mean: np.ndarray  # ... and the mean unit vector of those targets
    mover_keys: list[str]  # target genes B moved here ...
    mover_mean: np.ndarray  # ... and the mean unit vector of the knockdowns that moved them
    all_targets_mean: np.ndarray  # mean unit vector over every measured target gene

    @classmethod
    def fit(cls, rows: pd.DataFrame, embedding: GeneEmbedding, cell_line: str, pseudo: float = 20.0) -> "LineProfile":
        """From one line's labelled rows (pert, gene, label)."""
        if rows.empty:
            raise ValueError(f"no rows to build the {cell_line!r} profile from")
        pairs = (rows.groupby(["pert", "gene"])["label"].agg(["sum", "count"]).reset_index()
                 .rename(columns={"sum": "pos", "count": "n"}))
        de = rows[rows["label"] == 1]
        tk, tm = _group_mean(unit_rows(embedding, de["gene"]), de["pert"].to_numpy())
        mk, mm = _group_mean(unit_rows(embedding, de["pert"]), de["gene"].to_numpy())
        allm = np.nanmean(unit_rows(embedding, rows["gene"].unique()), axis=0)
        return cls(cell_line, GeneStats.fit(rows, pseudo), pairs, tk, tm, mk, mm, allm)

    def features(self, perts, genes, embedding: GeneEmbedding) -> np.ndarray:
        """``[n, len(PROFILE_FEATURES)]``: the gene statistics (:class:`GeneStats`), the pair's
        own DE rate here (NaN where never measured) and count, and the two neighbourhood
        scores: cos(B, mean of A's DE targets here) minus cos(B, mean of all targets), and
        cos(A, mean of the knockdowns that moved B here). NaN where a gene lacks a vector or
        A moved nothing / nothing moved B: the trees route missing values."""
        perts, genes = list(perts), list(genes)
        st = self.stats.features(perts, genes)
        q = pd.DataFrame({"pert": perts, "gene": genes})
        j = q.merge(self.pairs, on=["pert", "gene"], how="left")
        with np.errstate(invalid="ignore", divide="ignore"):
            pair_rate = (j["pos"] / j["n"]).to_numpy(np.float64)
        pair_n = np.log1p(j["n"].fillna(0).to_numpy(np.float64))
        eb, ea = unit_rows(embedding, genes), unit_rows(embedding, perts)
        ti = {k: i for i, k in enumerate(self.target_keys)}
        mi = {k: i for i, k in enumerate(self.mover_keys)}
        t = np.full_like(eb, np.nan)
        m = np.full_like(ea, np.nan)
        ta = np.array([ti.get(p, -1) for p in perts])
        ma = np.array([mi.get(g, -1) for g in genes])
        t[ta >= 0] = self.target_mean[ta[ta >= 0]]
        m[ma >= 0] = self.mover_mean[ma[ma >= 0]]
        near_t = np.einsum("ij,ij->i", eb, t) - eb @ self.all_targets_mean
        near_m = np.einsum("ij,ij->i", ea, m)
        return np.column_stack([st, pair_rate, pair_n, near_t, near_m])

    # ----------------------------------------------------------------- storage (no pickle)
    def save(self, directory: str | os.PathLike) -> None:
        from safetensors.numpy import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.pairs.to_parquet(d / "pairs.parquet", index=False)
        save_file({"target_mean": np.ascontiguousarray(self.target_mean, dtype=np.float64),
                   "mover_mean": np.ascontiguousarray(self.mover_mean, dtype=np.float64),
                   "all_targets_mean": np.ascontiguousarray(self.all_targets_mean, dtype=np.float64)},
                  str(d / "means.safetensors"))
        (d / "profile.json").write_text(json.dumps({"cell_line": self.cell_line, "stats": self.stats.to_json(),
                                                    "target_keys": self.target_keys,
                                                    "mover_keys": self.mover_keys}))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "LineProfile":
        from safetensors.numpy import load_file

        d = Path(directory)
        meta = json.loads((d / "profile.json").read_text())
        t = load_file(str(d / "means.safetensors"))
        return cls(meta["cell_line"], GeneStats.from_json(meta["stats"]), pd.read_parquet(d / "pairs.parquet"),
                   meta["target_keys"], t["target_mean"], meta["mover_keys"], t["mover_mean"], t["all_targets_mean"])
