"""The validation split, whole-gene eval sets and the lookup baselines, on the real tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from softverify.bio.lookups import LOOKUPS, lookup_report, lookup_scores_for_line
from softverify.bio.questions import select_split, whole_gene_rows
from softverify.config import ConfigError, DataConfig


def test_validation_split_shares_no_perturbation_with_train_or_test(pqa_mirror):
    cfg = DataConfig(mirror=str(pqa_mirror), cell_lines=["k562", "rpe1"])
    train, val, test = (select_split(cfg, s) for s in ("train", "val", "test"))
    key = lambda d: set(zip(d["cell_line"], d["pert"]))  # noqa: E731
    assert key(val) and not key(val) & key(train) and not key(val) & key(test)
    assert not key(train) & key(test)
    for line in ("k562", "rpe1"):  # a ~10 % share of each line's train perturbations
        n_val = len({p for c, p in key(val) if c == line})
        n_tr = len({p for c, p in key(train) if c == line})
        assert 0.06 < n_val / (n_val + n_tr) < 0.14
    # train + val is exactly the upstream train split
    upstream = select_split(cfg.model_copy(update={"val_fraction": 0.0}), "train")
    assert len(train) + len(val) == len(upstream)
    # the validation set is the same whatever the run's seed, and moves with its own seed
    assert key(select_split(cfg.model_copy(update={"seed": 7}), "val")) == key(val)
    assert key(select_split(cfg.model_copy(update={"val_seed": 1}), "val")) != key(val)
    with pytest.raises(ConfigError, match="val_fraction is 0"):
        select_split(cfg.model_copy(update={"val_fraction": 0.0}), "val")


def test_whole_gene_rows_keep_every_positive_and_cap_negatives(pqa_mirror):
    val = select_split(DataConfig(mirror=str(pqa_mirror)), "val")
    rows = whole_gene_rows(val, 20, 3, np.random.default_rng(0))
    assert rows["gene"].nunique() == 20
    for g, grp in rows.groupby("gene"):
        assert 0 < grp["label"].sum() < len(grp)  # both labels: the gene is scorable
        assert grp["label"].sum() == val[val["gene"] == g]["label"].sum()  # every positive
        assert (grp["label"] == 0).sum() <= 3
    again = whole_gene_rows(val, 20, 3, np.random.default_rng(0))
    pd.testing.assert_frame_equal(rows, again)


def test_lookups_on_a_hand_made_table():
    own = pd.DataFrame({"pert": ["P1", "P1", "P2", "P3"], "gene": ["G1", "G2", "G1", "G1"],
                        "label": [1, 0, 0, 1], "split": ["train", "train", "train", "test"]})
    other = pd.DataFrame({"pert": ["P1", "P1", "P3", "P3"], "gene": ["G1", "G9", "G1", "G2"],
                          "label": [0, 1, 1, 1], "split": ["train"] * 4})
    tables = {"k562": own, "rpe1": other, "hepg2": other.iloc[:0]}
    rows = pd.DataFrame({"pert": ["P3", "P3", "P4"], "gene": ["G1", "G2", "G1"]})
    sc = lookup_scores_for_line(rows, "k562", tables.__getitem__)
    assert set(sc) == set(LOOKUPS)
    np.testing.assert_allclose(sc["b_rate_same_train"], [0.5, 0.0, 0.5])  # P3's own test row never counts
    np.testing.assert_allclose(sc["a_rate_other_lines"], [1.0, 1.0, 0.75])  # P4 unseen: the overall rate
    np.testing.assert_allclose(sc["pair_other_else_a_rate"], [1.0, 1.0, 0.75])  # measured pairs use their label
    np.testing.assert_allclose(sc["b_rate_other_lines"], [0.5, 1.0, 0.5])


def test_lookups_on_k562_test_reproduce_the_published_bars(pqa_mirror):
    from softverify.bio import perturbqa

    t = perturbqa.load_table("k562", "de", mirror=pqa_mirror)
    te = t[t["split"] == "test"]
    r = lookup_report(te, te["label"].to_numpy(), mirror=pqa_mirror, n_boot=100)
    assert r["b_rate_same_train"]["auc_per_gene"] == 0.5 and r["b_rate_same_train"]["auroc"] > 0.9
    assert r["a_rate_other_lines"]["auc_per_gene"] == pytest.approx(0.554, abs=0.002)
    assert r["pair_other_else_a_rate"]["auc_per_gene"] == pytest.approx(0.585, abs=0.002)
    assert r["a_rate_other_lines"]["auc_per_gene_genes"] == 665
