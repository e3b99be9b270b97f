"""Teacher tables: a soft verifier's p, scored once offline over a question pool.

Distillation frameworks score with the teacher once and train many students on the
result; so can a soft verifier. A teacher table is a parquet of ``pert, gene, p`` (p =
P(DE) of the pair): the ``world_model`` verifier with ``params.p_table`` reads p from it
instead of running a model, and abstains on pairs the table lacks. Labels are never read
to build one from a world model.

Tables make the science's arms the *same pipeline*, differing only in the numbers:

- ``model``: the world model's p over the pool (the teacher as is);
- ``center: gene``: each p moved on the logit scale by the median logit of its target
  gene's rows, ``sigmoid(logit p - median_B logit p)``. The within-gene order is kept and
  every target gene's midpoint becomes 0.5, so "gene B is often DE" -- the hub signal a
  pointwise reward teaches first -- is gone, and what is left is which *knockdowns* move B;
- ``center: gene_rank``: each p replaced by its percentile within its target gene: the same
  order, and every gene's rewards spread over (0, 1) however close its p lie;
- ``permute_seed``: the p values shuffled across the pool's rows (same multiset, every
  link to the pair broken): the control with the signal destroyed;
- ``lookup``: a lookup as the teacher (e.g. B's DE rate in the other lines), the control
  that knows hubs and nothing about knockdowns.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from softverify.infra.fsutil import atomic_file

COLUMNS = ("pert", "gene", "p")
CENTERS = (None, "gene", "gene_rank")
EPS = 1e-6


def center_by_gene(genes, p) -> np.ndarray:
    """``sigmoid(logit p - median logit p of the row's target gene)``; NaN stays NaN."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    z = np.log(p) - np.log1p(-p)
    med = pd.Series(z).groupby(np.asarray(genes).astype(str)).transform("median").to_numpy()
    return 1.0 / (1.0 + np.exp(-(z - med)))


def rank_by_gene(genes, p) -> np.ndarray:
    """Each p replaced by its percentile among its target gene's rows, ``(rank - 0.5) / n``
    (ties share their mean rank; a gene with one row gets 0.5). Order within a gene is kept,
    the gene's own level is gone, and unlike :func:`center_by_gene` the contrast does not
    shrink when a teacher's p of one gene lie close together: every gene spans (0, 1)."""
    s = pd.Series(np.asarray(p, dtype=np.float64))
    g = np.asarray(genes).astype(str)
    rank = s.groupby(g).rank(method="average").to_numpy()
    n = s.groupby(g).transform("size").to_numpy()
    return (rank - 0.5) / n


def permute(p, seed: int) -> np.ndarray:
    """The same values in a seeded random order (the reward multiset is kept)."""
    p = np.asarray(p, dtype=np.float64)
    return p[np.random.default_rng(int(seed)).permutation(len(p))]


def make_table(pairs: pd.DataFrame, p, center: str | None = None, permute_seed: int | None = None) -> pd.DataFrame:
    """A teacher table over the distinct ``(pert, gene)`` pairs of ``pairs`` (first p kept)."""
    if center not in CENTERS:
        raise ValueError(f"teacher table center {center!r}; expected one of {list(CENTERS)}")
    df = pd.DataFrame({"pert": pairs["pert"].astype(str).to_numpy(), "gene": pairs["gene"].astype(str).to_numpy(),
                       "p": np.asarray(p, dtype=np.float64)})
    df = df.drop_duplicates(["pert", "gene"]).reset_index(drop=True)
    df = df[np.isfinite(df["p"].to_numpy())].reset_index(drop=True)
    if df.empty:
        raise ValueError("teacher table: the teacher scored none of the pairs (all p are NaN)")
    if center == "gene":
        df["p"] = center_by_gene(df["gene"], df["p"])
    elif center == "gene_rank":
        df["p"] = rank_by_gene(df["gene"], df["p"])
    if permute_seed is not None:
        df["p"] = permute(df["p"], permute_seed)
    return df


def save_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.suffix != ".parquet":
        raise ValueError(f"teacher table {str(p)!r} must end in .parquet")
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(p) as tmp:
        df[list(COLUMNS)].to_parquet(tmp, index=False)
    return p


class TeacherTable:
    """``predict_proba(perts, genes)`` over a saved table (NaN where the pair is absent), so
    a table stands wherever a world model's p is read."""

    threshold = 0.5  # a centred table's midpoint; raw tables should name a threshold policy

    def __init__(self, df: pd.DataFrame, source: str = "<frame>"):
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"teacher table {source}: missing columns {missing}; expected {list(COLUMNS)}")
        p = df["p"].to_numpy(np.float64)
        if not np.all((p >= 0) & (p <= 1)):
            raise ValueError(f"teacher table {source}: p must lie in [0, 1]")
        self.source = source
        self._p = pd.Series(p, index=pd.MultiIndex.from_arrays([df["pert"].astype(str), df["gene"].astype(str)]))
        self._p = self._p[~self._p.index.duplicated()]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TeacherTable":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"teacher table {str(p)!r} not found (make one with `softverify worldmodel table`)")
        return cls(pd.read_parquet(p), repr(str(p)))

    def __len__(self) -> int:
        return len(self._p)

    def predict_proba(self, perts, genes) -> np.ndarray:
        idx = pd.MultiIndex.from_arrays([pd.Index(list(map(str, perts))), pd.Index(list(map(str, genes)))])
        return self._p.reindex(idx).to_numpy(np.float64)


def load_teacher(params: dict):
    """The p source a world-model verifier's params name: ``p_table`` (a teacher table) or
    ``model_dir`` (a fitted world model)."""
    if params.get("p_table"):
        return TeacherTable.load(params["p_table"])
    if not params.get("model_dir"):
        raise ValueError("world_model verifier needs params.model_dir (a `softverify worldmodel fit` output) "
                         "or params.p_table (a `softverify worldmodel table` output)")
    from softverify.bio.worldmodel_files import require_world_model_dir

    require_world_model_dir(params["model_dir"])  # before torch is imported: a typo fails in well under a second
    from softverify.bio.worldmodel import WorldModel

    return WorldModel.load(params["model_dir"])

