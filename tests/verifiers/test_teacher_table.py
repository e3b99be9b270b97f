"""Teacher tables: centring per target gene, the permuted control, and the verifier reading one."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from softverify.bio.teacher_table import TeacherTable, center_by_gene, make_table, permute, save_table
from softverify.types import Sample
from softverify.verifiers.soft import WorldModelVerifier


def _pool(n_genes=6, n_perts=20, seed=0):
    rng = np.random.default_rng(seed)
    genes = np.repeat([f"G{i}" for i in range(n_genes)], n_perts)
    perts = np.tile([f"P{j}" for j in range(n_perts)], n_genes)
    hub = np.repeat(rng.normal(0, 3, n_genes), n_perts)  # the target gene's own rate: what a lookup knows
    knock = np.tile(rng.normal(0, 1, n_perts), n_genes)  # the knockdown's strength: what must transfer
    p = 1 / (1 + np.exp(-(hub + knock)))
    return pd.DataFrame({"pert": perts, "gene": genes}), p


def test_centring_keeps_each_genes_order_and_removes_the_hub_signal():
    pairs, p = _pool()
    c = center_by_gene(pairs["gene"], p)
    for g in pairs["gene"].unique():
        m = (pairs["gene"] == g).to_numpy()
        assert spearmanr(p[m], c[m]).statistic == pytest.approx(1.0)
        assert np.median(c[m]) == pytest.approx(0.5)
    # the hubs dominate the raw p; centred, the target gene explains nothing
    gene_means = pd.Series(c).groupby(pairs["gene"].to_numpy()).mean()
    assert gene_means.std() < 0.05 < pd.Series(p).groupby(pairs["gene"].to_numpy()).mean().std()


def test_permuted_control_keeps_the_reward_multiset_and_breaks_the_pairing():
    pairs, p = _pool()
    t = make_table(pairs, p, center="gene", permute_seed=3)
    ref = make_table(pairs, p, center="gene")
    np.testing.assert_allclose(np.sort(t["p"]), np.sort(ref["p"]))
    assert abs(spearmanr(t["p"], ref["p"]).statistic) < 0.2
    np.testing.assert_array_equal(permute(p, 3), permute(p, 3))
    with pytest.raises(ValueError, match="center 'pert'"):
        make_table(pairs, p, center="pert")


def test_the_verifier_reads_p_from_a_table_and_abstains_off_it(tmp_path):
    pairs = pd.DataFrame({"pert": ["A", "A"], "gene": ["B", "C"]})
    path = save_table(make_table(pairs, [0.8, 0.1]), tmp_path / "t.parquet")
    tab = TeacherTable.load(path)
    np.testing.assert_allclose(tab.predict_proba(["A", "A", "Z"], ["C", "B", "B"]), [0.1, 0.8, np.nan])
    v = WorldModelVerifier(p_table=str(path), threshold=None)
    s = [Sample("q", "", "<answer>yes</answer>", {"pert": "A", "gene": "B", "task": "de"}),
         Sample("q", "", "<answer>yes</answer>", {"pert": "A", "gene": "B", "task": "de", "negated": True}),
         Sample("q", "", "<answer>no</answer>", {"pert": "A", "gene": "C", "task": "de"}),
         Sample("q", "", "<answer>no</answer>", {"pert": "Q", "gene": "C", "task": "de"})]
    np.testing.assert_allclose(v.score(s), [0.8, 0.2, 0.9, np.nan])
    with pytest.raises(ValueError, match="not both"):
        WorldModelVerifier(model_dir=str(tmp_path), p_table=str(path))
    with pytest.raises(ValueError, match="p_table"):
        WorldModelVerifier()
    with pytest.raises(FileNotFoundError, match="worldmodel table"):
        TeacherTable.load(tmp_path / "missing.parquet")


def test_rank_centring_spreads_every_gene_over_the_unit_interval():
    from softverify.bio.teacher_table import rank_by_gene

    genes = ["A", "A", "A", "A", "B", "B", "C"]
    p = [0.11, 0.12, 0.12, 0.13, 0.9, 0.8, 0.4]
    np.testing.assert_allclose(rank_by_gene(genes, p), [0.125, 0.5, 0.5, 0.875, 0.75, 0.25, 0.5])
    pairs = pd.DataFrame({"pert": list("abcdefg"), "gene": genes})
    t = make_table(pairs, p, center="gene_rank")
    assert np.abs(2 * t["p"] - 1).mean() > np.abs(2 * make_table(pairs, p, center="gene")["p"] - 1).mean()


def test_inductive_pool_holds_other_knockdowns_of_the_evaluated_genes(shared_data, tmp_path, capsys):
    """``worldmodel table --split train --genes-of test --eval-genes N``: only target genes the
    test eval draws, none of the test split's knockdowns; a pool that would share knockdowns
    with the evaluated split is refused, naming both splits."""
    from softverify.cli import main
    from softverify.config import DataConfig
    from softverify.data import load_eval_prompts

    mirror = str(shared_data / "perturbqa")
    out = tmp_path / "ind.parquet"
    assert main(["worldmodel", "table", "--split", "train", "--genes-of", "test", "--eval-genes", "8",
                 "--lookup", "a_rate_other_lines", "--from", mirror, "--out", str(out)]) == 0
    t = pd.read_parquet(out)
    ev = load_eval_prompts(DataConfig(mirror=mirror, eval_genes=8), "test").to_pandas()
    assert set(t["gene"]) <= set(ev["gene"]) and len(set(t["gene"])) >= 6
    assert not set(t["pert"]) & set(ev["pert"]) and len(t) > 3 * len(ev)
    capsys.readouterr()
    assert main(["worldmodel", "table", "--split", "val", "--genes-of", "val", "--eval-genes", "8",
                 "--lookup", "a_rate_other_lines", "--from", mirror, "--out", str(tmp_path / "x.parquet")]) == 2
    assert re.search(r"--split val and --genes-of val share \d+ knockdowns", capsys.readouterr().err)
    assert not (tmp_path / "x.parquet").exists()
