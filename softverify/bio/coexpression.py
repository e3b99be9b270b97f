"""Gene x gene co-expression matrices and co-expression questions.

A co-expression matrix is the knowledge behind two things: the ``coexpression`` verifier
(top fraction of pairs = "yes, co-expressed", bottom fraction = "no") and an extra
training task ("Are gene A and gene B likely to be co-expressed?"). Any score works
(a foundation model's PMI, a correlation from single-cell data); :func:`matrix_from_h5ad`
computes NPMI / Pearson / Spearman from an ``.h5ad`` so a user without a foundation model
still has one.

Files: ``.npz`` with ``genes`` (str array) and ``scores`` (float matrix), read with
``allow_pickle=False``; or ``.parquet``, wide (a ``gene`` column + one column per gene) or
long (``gene_a, gene_b, score``). Pairs are compared through their *percentile* among all
off-diagonal pairs, so scores of any scale (PMI in nats, correlations in [-1, 1]) mean the
same thing to the verifier.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TASK = "coexpression"
METHODS = ("npmi", "pearson", "spearman")

#: Same output format as the knockdown task (one answer parser, one format reward).
SYSTEM_PROMPT = (
    "You are a biology expert. Answer the user's question about gene co-expression. "
    "Think step by step about what each gene does, in which cells and pathways it is active, "
    "then answer yes or no, using exactly this format:\n"
    "<think>\nyour reasoning\n</think>\n<answer>\nyes or no\n</answer>"
)

# Index = the ``template`` column; append only, never reorder.
TEMPLATES = (
    "Are {a} and {b} likely to be co-expressed in {ctx} cells? The answer is either yes or no.",
    "In {ctx} cells, do the expression levels of {a} and {b} tend to rise and fall together? Answer yes or no.",
    "Is the expression of {a} likely to be correlated with the expression of {b} across {ctx} cells? "
    "The answer is either yes or no.",
)


@dataclass
class CoexpressionMatrix:
    """Symmetric ``scores[i, j]`` for ``genes[i], genes[j]``; :attr:`percentile` is derived."""

    genes: list[str]
    scores: np.ndarray

    def __post_init__(self) -> None:
        s = np.asarray(self.scores, dtype=np.float32)
        n = len(self.genes)
        if s.shape != (n, n):
            raise ValueError(f"co-expression matrix has shape {s.shape} for {n} genes; expected ({n}, {n})")
        if n < 3:
            raise ValueError("a co-expression matrix needs at least 3 genes")
        self.scores = s
        self._pos = {g: i for i, g in enumerate(self.genes)}
        self._upper = {g.upper(): i for i, g in reversed(list(enumerate(self.genes)))}
        self.percentile = _percentiles(s)

    def index(self, symbols) -> np.ndarray:
        """Row per symbol (exact, then case-insensitive); -1 where the gene is absent."""
        return np.fromiter((self._pos.get(s, self._upper.get(str(s).upper(), -1)) for s in symbols),
                           dtype=np.int64, count=len(symbols))

    def pair_percentile(self, a, b) -> np.ndarray:
        """Percentile of each pair's score among all off-diagonal pairs; NaN for unknown
        genes and for a gene paired with itself (no co-expression question there)."""
        ia, ib = self.index(a), self.index(b)
        ok = (ia >= 0) & (ib >= 0) & (ia != ib)
        out = np.full(len(ia), np.nan)
        out[ok] = self.percentile[ia[ok], ib[ok]]
        return out

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        if p.suffix != ".npz":
            raise ValueError(f"co-expression output {str(p)!r} must end in .npz")
        from softverify.infra.fsutil import atomic_file

        with atomic_file(p, suffix=".npz") as tmp:  # numpy appends .npz to any other name
            np.savez_compressed(tmp, genes=np.array(self.genes, dtype=str), scores=self.scores)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CoexpressionMatrix":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"co-expression matrix {str(p)!r} not found (build one with "
                                    "`softverify coexpr build --h5ad ...`)")
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "genes" not in z or "scores" not in z:
                    raise ValueError(f"{str(p)!r} must hold arrays 'genes' and 'scores'; has {list(z.keys())}")
                return cls([str(g) for g in z["genes"]], z["scores"])
        if p.suffix == ".parquet":
            return cls.from_frame(pd.read_parquet(p), str(p))
        raise ValueError(f"co-expression matrix {str(p)!r} must end in .npz or .parquet")

    @classmethod
    def from_frame(cls, df: pd.DataFrame, source: str = "frame") -> "CoexpressionMatrix":
        if {"gene_a", "gene_b", "score"} <= set(df.columns):  # long format
            genes = sorted(set(df["gene_a"]) | set(df["gene_b"]))
            pos = {g: i for i, g in enumerate(genes)}
            m = np.full((len(genes), len(genes)), np.nan, dtype=np.float32)
            ia, ib = df["gene_a"].map(pos).to_numpy(), df["gene_b"].map(pos).to_numpy()
            m[ia, ib] = df["score"].to_numpy()
            m[ib, ia] = np.where(np.isnan(m[ib, ia]), df["score"].to_numpy(), m[ib, ia])
            return cls(genes, m)
        if "gene" in df.columns:  # wide format
            genes = [str(g) for g in df["gene"]]
            missing = [g for g in genes if g not in df.columns]
            if missing:
                raise ValueError(f"wide co-expression table {source!r} lacks columns for {missing[:5]}")
            return cls(genes, df[genes].to_numpy(dtype=np.float32))
        raise ValueError(f"co-expression table {source!r} needs columns (gene_a, gene_b, score) or a 'gene' column "
                         f"plus one column per gene; has {list(df.columns)[:8]}")


def _percentiles(s: np.ndarray) -> np.ndarray:
    """Rank of every off-diagonal score in [0, 1] (ties share the mean rank); NaN stays NaN."""
    n = s.shape[0]
    iu = np.triu_indices(n, 1)
    vals = ((s[iu] + s.T[iu]) / 2).astype(np.float64)  # symmetrise defensively
    ok = ~np.isnan(vals)
    from scipy.stats import rankdata

    q = np.full(len(vals), np.nan)
    if ok.sum() > 1:
        q[ok] = (rankdata(vals[ok]) - 1) / (ok.sum() - 1)
    out = np.full((n, n), np.nan, dtype=np.float32)
    out[iu] = q
    out.T[iu] = q
    return out


# ------------------------------------------------------------------------ building


def matrix_from_h5ad(path: str | os.PathLike, method: str = "npmi", max_genes: int = 2000,
                     use_raw: bool | None = None, min_cells: int = 3) -> CoexpressionMatrix:
    """Co-expression from single cells: ``npmi`` (normalised pointwise mutual information
    of "expressed" = value > 0), ``pearson`` or ``spearman`` over cells.

    Keeps the ``max_genes`` most variable genes expressed in at least ``min_cells`` cells
    (the matrix is dense, genes^2 floats). ``use_raw`` None = use ``.raw`` when present
    (scanpy keeps log-normalised values there when ``.X`` is scaled, and scaled values
    are no use for "expressed or not").
    """
    import scipy.sparse as sp

    from softverify.bio.cell_embeddings import read_h5ad

    if method not in METHODS:
        raise ValueError(f"unknown co-expression method {method!r}; expected one of {list(METHODS)}")
    with warnings.catch_warnings():  # old-format files (scanpy's examples) warn on every read
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", module="anndata")
        a = read_h5ad(path)  # names the file when it is missing or unreadable (not h5py's errno text)
    src = a.raw if (use_raw or use_raw is None) and a.raw is not None else a
    if use_raw and a.raw is None:
        raise ValueError(f"{str(path)!r} has no .raw layer")
    x = src.X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    x = x.astype(np.float64)
    genes = np.asarray(src.var_names).astype(str)
    expressed = (x > 0).sum(axis=0)
    keep = np.flatnonzero(expressed >= min_cells)
    if len(keep) < 3:
        raise ValueError(f"{str(path)!r}: fewer than 3 genes are expressed in >= {min_cells} cells")
    if len(keep) > max_genes:
        var = x[:, keep].var(axis=0)
        keep = np.sort(keep[np.argsort(-var, kind="stable")[:max_genes]])
    x, genes = x[:, keep], genes[keep]
    if method == "npmi":
        scores = _npmi((x > 0).astype(np.float64))
    else:
        if method == "spearman":
            from scipy.stats import rankdata

            x = rankdata(x, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = np.corrcoef(x, rowvar=False)
    np.fill_diagonal(scores, np.nan)
    return CoexpressionMatrix(list(genes), scores.astype(np.float32))


def _npmi(b: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """NPMI of binary columns with add-``alpha`` smoothing: log(p_ab / p_a p_b) / -log p_ab."""
    n = b.shape[0]
    co = b.T @ b
    pa = (b.sum(axis=0) + alpha) / (n + 2 * alpha)
    pab = (co + alpha / 2) / (n + 2 * alpha)
    pmi = np.log(pab) - np.log(pa)[:, None] - np.log(pa)[None, :]
    return pmi / -np.log(pab)


# ------------------------------------------------------------------------ questions


def _pair_in_test(a: str, b: str, test_fraction: float, seed: int) -> bool:
    from softverify.bio.questions import stable_int

    x, y = sorted((a, b))
    return stable_int("coexpr-split", seed, x, y) < int(test_fraction * 2**64)


def coexpression_questions(matrix: CoexpressionMatrix, n: int, split: str = "train", top_fraction: float = 0.1,
                           bottom_fraction: float | None = None, context: str = "PBMC", seed: int = 0,
                           test_fraction: float = 0.2) -> pd.DataFrame:
    """``n`` balanced yes/no questions (fewer if the matrix is small) with the columns of
    :func:`softverify.bio.questions.load_questions`: the pair is in ``pert``/``gene``,
    ``cell_line`` holds ``context``, ``task`` = "coexpression", ``label`` 1 for a pair in the
    top fraction, 0 for the bottom fraction. Pairs are split train/test by a seeded hash
    of the unordered pair, so a pair never appears in both.
    """
    from softverify.bio.questions import stable_int

    if split not in ("train", "test"):
        raise ValueError(f"co-expression questions have splits 'train' and 'test', not {split!r}")
    bottom = top_fraction if bottom_fraction is None else bottom_fraction
    if not (0 < top_fraction < 0.5 and 0 < bottom < 0.5):
        raise ValueError(f"top/bottom fractions must be in (0, 0.5); got {top_fraction}, {bottom}")
    q = matrix.percentile
    iu, ju = np.triu_indices(len(matrix.genes), 1)
    pq = q[iu, ju]
    rng = np.random.default_rng([seed & 0xFFFFFFFF, stable_int("coexpr", split) & 0xFFFFFFFF])
    picked = []
    for label, mask, k in ((1, pq >= 1 - top_fraction, n - n // 2), (0, pq <= bottom, n // 2)):
        cand = rng.permutation(np.flatnonzero(mask))
        got = []
        for c in cand:  # rejection by split: cheap, the hash is fast and k is small
            a, b = matrix.genes[iu[c]], matrix.genes[ju[c]]
            if _pair_in_test(a, b, test_fraction, seed) == (split == "test"):
                got.append((a, b, label))
                if len(got) == k:
                    break
        picked.append(got)
    k = min(len(picked[0]), len(picked[1]))  # stay balanced when a class is short
    rows = picked[0][:k] + picked[1][:k]
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    swap = rng.random(len(rows)) < 0.5  # which gene is named first carries no signal
    tmpl = rng.integers(0, len(TEMPLATES), len(rows))
    a_s = [str(b if s else a) for (a, b, _), s in zip(rows, swap)]
    b_s = [str(a if s else b) for (a, b, _), s in zip(rows, swap)]
    return pd.DataFrame({
        "prompt_id": [f"coexpr-{context}-{a}-{b}-t{t}" for a, b, t in zip(a_s, b_s, tmpl)],
        "system": SYSTEM_PROMPT,
        "question": [TEMPLATES[t].format(a=a, b=b, ctx=context) for a, b, t in zip(a_s, b_s, tmpl)],
        "pert": a_s, "gene": b_s, "cell_line": context,
        "label": np.array([r[2] for r in rows], dtype=np.int64),
        "template": tmpl.astype(np.int64), "negated": False, "task": TASK,
    })
