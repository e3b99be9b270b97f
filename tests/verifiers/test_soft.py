"""World-model and co-expression verifiers on real data (PerturbQA K562, scanpy PBMCs)."""
from __future__ import annotations

import numpy as np
import pytest
from _vtools import completion, nan_equal, sample

from softverify.bio.metrics import binary_metrics
from softverify.bio.worldmodel import WorldModel
from softverify.config import VerifierSpec
from softverify.rewards import threshold_normalize
from softverify.verifiers import build_verifier
from softverify.verifiers.base import build_from_spec, composition_thresholds


def test_world_model_rewards_by_hand(wm_dir):
    d, tr = wm_dir
    wm = WorldModel.load(d)
    row = tr.iloc[0]
    p = wm.predict_proba([row.pert], [row.gene])[0]
    assert np.isfinite(p)
    v = build_verifier("world_model", model_dir=str(d), threshold=None)
    kw = dict(pert=row.pert, gene=row.gene)
    out = v.score([
        sample(completion("yes"), **kw), sample(completion("no"), **kw),
        sample(completion("yes"), negated=True, **kw),          # "unchanged?" -> yes means not DE
        sample("<answer>maybe</answer>", **kw),                  # malformed: no reward
        sample(completion("yes"), pert="NOT_A_GENE_XYZ", gene=row.gene),  # unknown gene: abstain
        sample(completion("yes"), task="coexpression", **kw),   # other task: abstain
    ])
    assert nan_equal(out, [p, 1 - p, 1 - p, 0.0, np.nan, np.nan])


def test_world_model_threshold_is_applied_to_p(wm_dir):
    d, tr = wm_dir
    wm = WorldModel.load(d)
    rows = tr.iloc[:50]
    p = wm.predict_proba(list(rows.pert), list(rows.gene))
    t = wm.threshold
    v = build_verifier("world_model", model_dir=str(d))  # default: the model's own threshold
    yes = v.score([sample(completion("yes"), pert=a, gene=b) for a, b in zip(rows.pert, rows.gene)])
    no = v.score([sample(completion("no"), pert=a, gene=b) for a, b in zip(rows.pert, rows.gene)])
    assert nan_equal(yes, threshold_normalize(p, t)) and nan_equal(no, 1 - threshold_normalize(p, t))
    assert ((yes >= 0.5) == (p >= t)).all()
    # spec.threshold goes to the verifier, and composition does not apply it a second time
    spec = VerifierSpec(kind="world_model", threshold=0.2, params={"model_dir": str(d)})
    assert build_from_spec(spec).threshold == 0.2
    assert composition_thresholds([spec, VerifierSpec(kind="hard", threshold=0.3)]) == [None, 0.3]


def test_world_model_reward_separates_labels(wm_dir, k562):
    """On held-out perturbations, 'yes' earns more where the experiment says DE."""
    d, tr = wm_dir
    te = k562[~k562["pert"].isin(set(tr["pert"])) & k562["gene"].isin(set(tr["gene"]))]
    te = te[te["pert"].isin(set(tr["gene"]))].sample(3000, random_state=1)
    v = build_verifier("world_model", model_dir=str(d), threshold=None)
    r = v.score([sample(completion("yes"), pert=a, gene=b) for a, b in zip(te.pert, te.gene)])
    assert np.isfinite(r).mean() > 0.5
    assert binary_metrics(r, te["label"].to_numpy(), 0.5)["auroc"] > 0.6


def test_world_model_errors(tmp_path):
    with pytest.raises(ValueError, match="model_dir"):
        build_verifier("world_model")
    with pytest.raises(FileNotFoundError, match="world model"):
        build_verifier("world_model", model_dir=str(tmp_path))


def test_coexpression_pbmc_pairs(coexpr_npz):
    from softverify.bio.coexpression import CoexpressionMatrix

    m = CoexpressionMatrix.load(coexpr_npz)
    v = build_verifier("coexpression", matrix=str(coexpr_npz), top_fraction=0.1)
    # CD3D/CD3E: T-cell receptor complex; MS4A1/CD79A: B cells; CD3E/LYZ: T cell vs monocyte.
    q = m.pair_percentile(["CD3D", "MS4A1", "CD3E"], ["CD3E", "CD79A", "LYZ"])
    assert q[0] > 0.95 and q[1] > 0.95 and q[2] < 0.05, q
    s = v.score([
        sample(completion("yes"), pert="CD3D", gene="CD3E"), sample(completion("no"), pert="CD3D", gene="CD3E"),
        sample(completion("no"), pert="CD3E", gene="LYZ"), sample(completion("yes"), pert="CD3E", gene="LYZ"),
        sample(completion(None), pert="CD3D", gene="CD3E"),
        sample(completion("yes"), pert="CD3D", gene="NOT_A_GENE_XYZ"),
        sample(completion("yes"), pert="CD3D", gene="CD3D"),
    ])
    p_top = threshold_normalize(np.array([q[0]]), 0.9)[0]
    assert s[0] == pytest.approx(p_top) and s[1] == pytest.approx(1 - p_top)
    assert s[2] > 0.9 and s[3] < 0.1 and s[4] == 0.0 and np.isnan(s[5]) and np.isnan(s[6])
    hard = build_verifier("coexpression", matrix=str(coexpr_npz), mode="hard")
    assert nan_equal(hard.score([sample(completion("yes"), pert="CD3D", gene="CD3E"),
                                 sample(completion("yes"), pert="CD3E", gene="LYZ")]), [1.0, 0.0])


def test_coexpression_middle_pairs_abstain(coexpr_npz):
    from softverify.bio.coexpression import CoexpressionMatrix

    m = CoexpressionMatrix.load(coexpr_npz)
    iu = np.triu_indices(len(m.genes), 1)
    q = m.percentile[iu]
    mid = np.flatnonzero((q > 0.4) & (q < 0.6))[:20]
    v = build_verifier("coexpression", matrix=str(coexpr_npz), top_fraction=0.1)
    s = v.score([sample(completion("yes"), pert=m.genes[iu[0][k]], gene=m.genes[iu[1][k]]) for k in mid])
    assert len(mid) == 20 and np.isnan(s).all()


def test_coexpression_formats_agree(tmp_path, coexpr_npz):
    import pandas as pd

    from softverify.bio.coexpression import CoexpressionMatrix

    m = CoexpressionMatrix.load(coexpr_npz)
    g = m.genes[:40]
    sub = CoexpressionMatrix(g, m.scores[:40, :40])
    wide = pd.DataFrame(sub.scores, columns=g).assign(gene=g)
    wide.to_parquet(tmp_path / "w.parquet")
    iu = np.triu_indices(40, 1)
    long = pd.DataFrame({"gene_a": np.array(g)[iu[0]], "gene_b": np.array(g)[iu[1]], "score": sub.scores[iu]})
    long.to_parquet(tmp_path / "l.parquet")
    for f in ("w.parquet", "l.parquet"):
        back = CoexpressionMatrix.load(tmp_path / f)
        order = back.index(g)
        assert nan_equal(back.percentile[np.ix_(order, order)], sub.percentile)
    with pytest.raises(ValueError, match="gene_a"):
        CoexpressionMatrix.from_frame(pd.DataFrame({"x": [1]}))
    np.savez(tmp_path / "bad.npz", genes=np.array(["A", "B", "C"]))
    with pytest.raises(ValueError, match="scores"):
        CoexpressionMatrix.load(tmp_path / "bad.npz")


def test_coexpression_questions(coexpr_npz):
    from softverify.bio.coexpression import CoexpressionMatrix, coexpression_questions
    from softverify.bio.questions import COLUMNS

    m = CoexpressionMatrix.load(coexpr_npz)
    tr = coexpression_questions(m, 200, "train", 0.1, seed=3)
    te = coexpression_questions(m, 100, "test", 0.1, seed=3)
    assert tuple(tr.columns) == COLUMNS and len(tr) == 200 and tr["label"].mean() == 0.5
    assert (tr["task"] == "coexpression").all() and tr["question"].str.contains("co-expressed|together|correlated").all()
    pairs = lambda d: {tuple(sorted(p)) for p in zip(d.pert, d.gene)}  # noqa: E731
    assert not pairs(tr) & pairs(te)
    q = m.pair_percentile(list(tr.pert), list(tr.gene))
    assert ((q >= 0.9) == (tr["label"] == 1)).all() and ((q <= 0.1) == (tr["label"] == 0)).all()
    # the verifier agrees with the question labels: right answers score >= 0.5
    v = build_verifier("coexpression", matrix=str(coexpr_npz))
    s = v.score([sample(completion("yes" if y else "no"), pert=a, gene=b, task="coexpression")
                 for a, b, y in zip(tr.pert, tr.gene, tr.label)])
    assert (s >= 0.5).all()


def test_shuffled_world_model_control_is_consistent_but_unrelated(wm_dir, k562):
    """The science ladder's control: same p distribution, each question a fixed reward,
    but the reward no longer tracks the question's genes."""
    d, tr = wm_dir
    te = tr.sample(2000, random_state=3)
    real = build_verifier("world_model", model_dir=str(d), threshold=None)
    shuf = build_verifier("world_model", model_dir=str(d), threshold=None, shuffle_seed=1)
    qs = [sample(completion("yes"), pert=a, gene=b) for a, b in zip(te.pert, te.gene)]
    r, s = real.score(qs), shuf.score(qs)
    assert nan_equal(s, shuf.score(qs))  # consistent: the same question, the same reward
    ok = np.isfinite(r) & np.isfinite(s)
    assert ok.mean() > 0.9 and not np.allclose(r[ok], s[ok])
    y = te["label"].to_numpy()[ok]
    assert binary_metrics(r[ok], y, 0.5)["auroc"] > 0.7
    assert abs(binary_metrics(s[ok], y, 0.5)["auroc"] - 0.5) < 0.1


def test_threshold_policy_is_resolved_by_the_trainer_not_the_verifier(wm_dir):
    d, _ = wm_dir
    with pytest.raises(ValueError, match="'median' is a policy over training prompts"):
        build_verifier("world_model", model_dir=str(d), threshold="median")
