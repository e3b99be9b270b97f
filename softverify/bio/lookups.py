"""Lookup baselines for DE questions, scored on the same rows as a model.

A number for a policy or a world model means little without the tables it must beat. Two
kinds of lookup matter, and they answer different metrics:

- **target-gene rates** (``b_rate_same_train``, ``b_rate_other_lines``): how often gene B
  is DE. They are constant within a target gene, so PerturbQA's ``auc_per_gene`` gives
  them exactly 0.5, while they win the pooled AUROC (the hubs carry most positives).
- **knockdown lookups** (``a_rate_other_lines``: how often knocking down A moves anything
  in the other cell lines; ``pair_other_else_a_rate``: the pair's own label in the other
  lines where it was measured, else A's rate). They vary within a target gene, so they set
  the per-gene bar a model must clear to show knowledge beyond "A is a strong perturber".

"Other lines" are the PerturbQA lines besides the row's own (K562, RPE1, HepG2), every row
of them; the same line's rows enter only through its *train* split (``b_rate_same_train``),
so a test row's own label never scores it. A row the table has no entry for gets the
table's overall rate (a constant: it ties, it never drops the row).
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import pandas as pd

from softverify.bio import perturbqa
from softverify.metrics.ranking import auc_per_gene, auroc_rows

#: The lookups in report order: target-gene rates first (pooled only), then knockdown ones.
LOOKUPS: tuple[str, ...] = ("b_rate_same_train", "b_rate_other_lines", "a_rate_other_lines",
                            "pair_other_else_a_rate")

#: The lines a lookup may draw on (Jurkat is pinned upstream but not part of the default data).
LOOKUP_LINES: tuple[str, ...] = perturbqa.DEFAULT_CELL_LINES


def _rate(table: pd.DataFrame, key: str | list[str], rows: pd.DataFrame) -> np.ndarray:
    """Mean label of ``table`` per ``key``, read at ``rows``; the table's overall rate where absent."""
    if table.empty:
        return np.full(len(rows), np.nan)
    rates = table.groupby(key, sort=False)["label"].mean().rename("_rate")
    got = rows[[key] if isinstance(key, str) else key].join(rates, on=key)["_rate"].to_numpy(np.float64)
    return np.where(np.isfinite(got), got, float(table["label"].mean()))


def lookup_scores_for_line(rows: pd.DataFrame, cell_line: str, tables: Callable[[str], pd.DataFrame],
                           exclude_perts: set[str] | None = None) -> dict[str, np.ndarray]:
    """Every lookup's score for ``rows`` (columns pert, gene) of one cell line.

    ``tables(line)`` returns a PerturbQA DE table (pert, gene, label, split). ``exclude_perts``:
    perturbations whose rows of the *same* line must not feed ``b_rate_same_train`` (a
    validation split's perturbations, when the rows scored are that split's).
    """
    line = perturbqa.check_cell_line(cell_line)
    own = tables(line)
    own_train = own[own["split"] == "train"]
    if exclude_perts:
        own_train = own_train[~own_train["pert"].isin(exclude_perts)]
    others = [c for c in LOOKUP_LINES if c != line]
    other = pd.concat([tables(c) for c in others], ignore_index=True) if others else own.iloc[:0]
    rows = rows[["pert", "gene"]].astype(str).reset_index(drop=True)
    a_rate = _rate(other, "pert", rows)
    pair = (rows.join(other.groupby(["pert", "gene"])["label"].mean().rename("_pair"), on=["pert", "gene"])["_pair"]
            .to_numpy(np.float64) if not other.empty else np.full(len(rows), np.nan))
    return {
        "b_rate_same_train": _rate(own_train, "gene", rows),
        "b_rate_other_lines": _rate(other, "gene", rows),
        "a_rate_other_lines": a_rate,
        "pair_other_else_a_rate": np.where(np.isfinite(pair), pair, a_rate),
    }


def lookup_scores(rows: pd.DataFrame, mirror: str | os.PathLike | None = None,
                  exclude_perts: set[str] | None = None) -> dict[str, np.ndarray]:
    """:func:`lookup_scores_for_line` for rows (pert, gene, cell_line) of any lines, in row order."""
    def tables(c: str) -> pd.DataFrame:
        return perturbqa.load_table(c, "de", mirror=mirror)

    rows = rows.reset_index(drop=True)
    out = {k: np.full(len(rows), np.nan) for k in LOOKUPS}
    for line, idx in rows.groupby("cell_line", sort=False).groups.items():
        idx = np.asarray(idx)
        got = lookup_scores_for_line(rows.iloc[idx], str(line), tables, exclude_perts)
        for k in LOOKUPS:
            out[k][idx] = got[k]
    return out


def ranking_report(genes, labels, scores, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Per-gene AUROC (with its interval over genes) beside the pooled AUROC of one scorer."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(s)
    pooled = float(auroc_rows(y[ok], s[ok])[0]) if ok.any() else float("nan")
    return {"auroc": pooled, **auc_per_gene(genes, y, s, n_boot=n_boot, seed=seed).as_dict()}


def lookup_report(rows: pd.DataFrame, labels, mirror: str | os.PathLike | None = None,
                  exclude_perts: set[str] | None = None, n_boot: int = 1000) -> dict[str, dict[str, float]]:
    """Pooled and per-gene AUROC of every lookup on ``rows`` against ``labels`` (the DE labels:
    for negated questions pass the un-negated label)."""
    sc = lookup_scores(rows, mirror=mirror, exclude_perts=exclude_perts)
    genes = rows["gene"].astype(str).to_numpy()
    return {k: ranking_report(genes, labels, sc[k], n_boot=n_boot) for k in LOOKUPS}
