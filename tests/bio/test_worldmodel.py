from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from softverify.bio import embeddings as E
from softverify.bio.metrics import binary_metrics
from softverify.bio.worldmodel import FitConfig, WorldModel, pert_prior, predict_prior, target_prior


@pytest.fixture(scope="module")
def small_loco(pqa_mirror):
    """RPE1 rows on 400 random shared target genes -> K562 test rows on the same genes."""
    from softverify.bio.perturbqa import load_table

    tr = load_table("rpe1", "de", mirror=pqa_mirror)
    te = load_table("k562", "de", mirror=pqa_mirror)
    shared = sorted(set(tr["gene"]) & set(te["gene"]))
    genes = set(np.random.default_rng(0).choice(shared, 400, replace=False))
    tr = tr[tr["gene"].isin(genes)]
    tr = tr.sample(min(8000, len(tr)), random_state=0)
    te = te[(te["split"] == "test") & te["gene"].isin(genes)]
    return tr.reset_index(drop=True), te.reset_index(drop=True)


def test_onehot_world_model_learns_and_roundtrips(small_loco, tmp_path):
    tr, te = small_loco
    emb = E.onehot_embedding(sorted(set(tr["pert"]) | set(tr["gene"])))
    wm = WorldModel.fit(tr, emb, FitConfig(hidden=(32, 16), max_epochs=4, batch_size=512), log=lambda m: None)
    assert 0 < wm.threshold < 1 and wm.meta["embedding_kind"] == "onehot"
    m = wm.evaluate(te)
    assert m["coverage"] > 0.5 and m["auroc"] > 0.65, m
    p = wm.predict_proba(["NOT_A_GENE", te["pert"][0]], [te["gene"][0], te["gene"][0]])
    assert np.isnan(p[0]) and 0 <= p[1] <= 1 if np.isfinite(p[1]) else True
    wm.save(tmp_path / "wm")
    assert sorted(x.name for x in (tmp_path / "wm").iterdir()) == ["model.safetensors", "worldmodel.json"]
    back = WorldModel.load(tmp_path / "wm")
    np.testing.assert_allclose(back.predict_proba(list(te["pert"]), list(te["gene"])),
                               wm.predict_proba(list(te["pert"]), list(te["gene"])), rtol=1e-6, equal_nan=True)
    assert back.threshold == wm.threshold and back.meta["cell_lines"] == ["rpe1"]


def test_dense_world_model_on_go_embedding(small_loco, gene_kb):
    tr, te = small_loco
    emb = E.go_factor_embedding(gene_kb, sorted(set(tr["pert"]) | set(tr["gene"]) | set(te["pert"])), dim=16)
    wm = WorldModel.fit(tr, emb, FitConfig(hidden=(32,), max_epochs=3, batch_size=512), log=lambda m: None)
    m = wm.evaluate(te)
    assert m["auroc"] > 0.6 and np.isfinite(m["mcc"])


def test_target_prior_baseline(small_loco):
    tr, te = small_loco
    prior = target_prior(tr)
    p = predict_prior(prior, list(te["gene"]))
    assert binary_metrics(p, te["label"].to_numpy(), 0.3)["auroc"] > 0.6


def test_priors_by_hand():
    rows = pd.DataFrame({"pert": ["A", "A", "B"], "gene": ["X", "Y", "X"], "label": [1, 0, 1]})
    assert target_prior(rows) == {"X": 1.0, "Y": 0.0}
    assert pert_prior(rows) == {"A": 0.5, "B": 1.0}  # A changes 1 of its 2 targets
    p = predict_prior(pert_prior(rows), ["B", "A", "C"])
    assert p[:2].tolist() == [1.0, 0.5] and np.isnan(p[2])  # a knockdown never seen: no prior


def test_errors(tmp_path):
    emb = E.onehot_embedding(["A", "B"])
    df = pd.DataFrame({"pert": ["X"] * 20, "gene": ["Y"] * 20, "label": [0, 1] * 10})
    with pytest.raises(ValueError, match="have embeddings for both genes"):
        WorldModel.fit(df, emb)
    with pytest.raises(FileNotFoundError, match="worldmodel fit"):
        WorldModel.load(tmp_path)


def test_metrics_by_hand():
    p = np.array([0.9, 0.8, 0.2, 0.1, np.nan])
    y = np.array([1, 0, 1, 0, 1])
    m = binary_metrics(p, y, 0.5)
    assert m["coverage"] == 0.8 and m["auroc"] == 0.75
    assert m["tpr"] == 0.5 and m["tnr"] == 0.5 and m["mcc"] == 0.0
    # all rows: the uncovered positive is answered "no" (p = 0): TP 1, FN 2, TN 1, FP 1
    a = m["all_rows"]
    assert a["tpr"] == pytest.approx(1 / 3) and a["tnr"] == 0.5
    assert a["mcc"] == pytest.approx((1 * 1 - 1 * 2) / np.sqrt(2 * 3 * 3 * 2))
    # ranks: positives 0.9, 0.2, 0 vs negatives 0.8, 0.1 -> 3 of 6 pairs ordered
    assert a["auroc"] == pytest.approx(0.5)


def test_uncovered_rows_lower_the_all_rows_mcc():
    """A model that answers only the easy rows must not look better on all rows."""
    y = np.array([1, 1, 0, 0] * 5)
    p_full = np.where(y == 1, 0.7, 0.3)
    p_partial = p_full.copy()
    p_partial[: len(y) // 2] = np.nan
    full, partial = binary_metrics(p_full, y, 0.5), binary_metrics(p_partial, y, 0.5)
    assert partial["mcc"] == full["mcc"] == 1.0  # covered-only: equally perfect
    assert partial["all_rows"]["mcc"] < full["all_rows"]["mcc"] == 1.0
