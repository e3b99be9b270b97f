"""GenePT cell embeddings from an AnnData ``.h5ad`` (Chen & Zou 2024).

- GenePT-w: a cell is the expression-weighted average of its genes' text embeddings,
  L2-normalised. Weights must be non-negative expression (counts or log-normalised),
  so ``adata.raw`` is used when ``X`` is scaled (z-scored values are negative).
- GenePT-s: a cell is the sentence of its expressed gene symbols ordered by expression
  (highest first), embedded with the same text encoder.

Both are label-free, so they can annotate cell types by nearest neighbours.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from softverify.bio.embeddings import GeneEmbedding


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first 8 bytes of an HDF5 file without a user block, as anndata writes


def read_h5ad(path: str | os.PathLike):
    """The AnnData at ``path``; a missing file, a directory, a file that is not HDF5 or a
    damaged one is an error naming the path (h5py's own message names neither it nor the fix)."""
    import anndata

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"AnnData file {str(p)!r} not found")
    if not p.is_file():
        raise ValueError(f"AnnData file {str(p)!r} is a directory, not an .h5ad file")
    with open(p, "rb") as f:
        head = f.read(len(HDF5_SIGNATURE))
    if head != HDF5_SIGNATURE:  # h5py would say "Unable to synchronously open file (file signature not found)"
        raise ValueError(f"{str(p)!r} is not a readable AnnData .h5ad file: it is not HDF5 (an .h5ad is the HDF5 "
                         f"file anndata/scanpy write with adata.write_h5ad)")
    try:
        return anndata.read_h5ad(p)
    except Exception as e:  # h5py/anndata raise OSError, KeyError, TypeError... on a bad file
        raise ValueError(f"{str(p)!r} is not a readable AnnData .h5ad file ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None


def expression(adata, use_raw: bool | None = None) -> tuple[np.ndarray, list[str]]:
    """Dense non-negative (cells x genes) matrix and gene symbols.

    ``use_raw=None`` picks ``adata.raw`` when ``X`` has negative values (scaled data).
    """
    from scipy import sparse

    x = adata.X
    names = list(map(str, adata.var_names))
    xmin = x.min() if not sparse.issparse(x) else x.min()
    if use_raw or (use_raw is None and xmin < 0):
        if adata.raw is None:
            raise ValueError("expression is scaled (negative values) and the AnnData has no .raw to weight genes by")
        x = adata.raw.X
        names = list(map(str, adata.raw.var_names))
    x = x.toarray() if sparse.issparse(x) else np.asarray(x)
    if (x < 0).any():
        raise ValueError("GenePT-w needs non-negative expression; got negative values")
    return x.astype(np.float32), names


def genept_w(x: np.ndarray, genes: list[str], emb: GeneEmbedding) -> tuple[np.ndarray, float]:
    """Cells x d embeddings; also returns the fraction of genes that had an embedding."""
    m = emb.matrix(genes)
    have = ~np.isnan(m).any(axis=1)
    if not have.any():
        raise ValueError("none of the AnnData genes has a gene embedding (check var_names are symbols)")
    xs, ms = x[:, have], m[have]
    w = xs / np.maximum(xs.sum(axis=1, keepdims=True), 1e-8)
    z = w @ ms
    z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-8
    return z.astype(np.float32), float(have.mean())


def cell_sentences(x: np.ndarray, genes: list[str], top_k: int = 100) -> list[str]:
    """Expressed genes of each cell, highest expression first (ties by name), at most ``top_k``."""
    names = np.asarray(genes)
    out = []
    for row in x:
        nz = np.flatnonzero(row > 0)
        order = nz[np.lexsort((names[nz], -row[nz]))][:top_k]
        out.append(" ".join(names[order]))
    return out


def genept_s(x: np.ndarray, genes: list[str], encode: Callable[[list[str]], np.ndarray], top_k: int = 100) -> np.ndarray:
    z = encode(cell_sentences(x, genes, top_k))
    return (z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-8)).astype(np.float32)


def knn_annotation_scores(z: np.ndarray, labels: np.ndarray, k: int = 10, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Stratified k-fold cosine kNN cell-type annotation: mean accuracy and macro-F1."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    accs, f1s = [], []
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for tr, te in skf.split(z, labels):
        clf = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(z[tr], labels[tr])
        pred = clf.predict(z[te])
        accs.append(accuracy_score(labels[te], pred))
        f1s.append(f1_score(labels[te], pred, average="macro"))
    return {"accuracy": float(np.mean(accs)), "macro_f1": float(np.mean(f1s)),
            "accuracy_sd": float(np.std(accs)), "macro_f1_sd": float(np.std(f1s))}
