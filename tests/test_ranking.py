"""PerturbQA's per-gene AUROC on hand-computed cases, and its interval over genes."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from softverify.metrics.ranking import auc_per_gene, bootstrap_ci, gene_aurocs


def test_hand_computed_case_skips_one_label_genes_and_counts_ties_half():
    genes = ["A", "A", "A", "B", "B", "C", "C", "D", "D", "D", "D", "D"]
    labels = [1, 0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0]
    scores = [0.9, 0.5, 0.5, 0.2, 0.2, 0.3, 0.1, 0.1, 0.4, 0.3, 0.2, float("nan")]
    per = gene_aurocs(genes, labels, scores)
    # A: the positive above both negatives = 1; B: one tied pair = 0.5; C: one label only, skipped;
    # D (the NaN row dropped): positives 0.1, 0.4 against negatives 0.3, 0.2 -> 2 of 4 pairs = 0.5
    assert per == {"A": 1.0, "B": 0.5, "D": 0.5}
    r = auc_per_gene(genes, labels, scores)
    assert r.auc_per_gene == pytest.approx(2.0 / 3.0)
    assert (r.genes, r.rows) == (3, 9)
    assert r.lo <= r.auc_per_gene <= r.hi


def test_matches_sklearn_per_gene_and_a_target_gene_lookup_scores_exactly_half():
    rng = np.random.default_rng(0)
    genes = rng.choice([f"g{i}" for i in range(30)], 600)
    labels = rng.integers(0, 2, 600)
    scores = rng.normal(size=600) + labels * 0.5
    per = gene_aurocs(genes, labels, scores)
    for g, v in per.items():
        m = genes == g
        assert v == pytest.approx(roc_auc_score(labels[m], scores[m]))
    assert auc_per_gene(genes, labels, scores).auc_per_gene == pytest.approx(np.mean(list(per.values())))
    # a score that depends on the target gene alone: 0.5 per gene however well it ranks pooled rows
    gene_rate = {g: labels[genes == g].mean() for g in set(genes)}
    lookup = np.array([gene_rate[g] for g in genes])
    r = auc_per_gene(genes, labels, lookup)
    assert r.auc_per_gene == 0.5 and r.lo == r.hi == 0.5


def test_interval_is_over_genes_and_empty_input_is_nan():
    lo, hi = bootstrap_ci(lambda v: v.mean(-1), np.array([0.4, 0.6, 0.5, 0.7, 0.3]), n_boot=2000, rows=True)
    assert 0.3 < lo < 0.5 < hi < 0.7
    r = auc_per_gene(["A", "B"], [1, 0], [0.3, 0.2])  # no gene holds both labels
    assert math.isnan(r.auc_per_gene) and r.genes == 0
    with pytest.raises(ValueError, match="differ in length"):
        auc_per_gene(["A"], [1, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="labels must be 0/1"):
        auc_per_gene(["A", "A"], [2, 0], [0.1, 0.2])
