"""Fixtures for verifier tests: the real data beside the repo and small files made from it."""
from __future__ import annotations

from pathlib import Path

import pytest

# CI clones the repo with shared/ beside it: <root>/../shared/data.
DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} not present")
    return DATA


@pytest.fixture(scope="session")
def kb_params(data_root, tmp_path_factory) -> dict:
    """Knowledge-verifier params: a gene KB built once from the real NCBI/GO files and
    saved as parquet (``softverify genes build`` output), so actors load it in seconds."""
    from softverify.bio.genes import GeneKB

    g = data_root / "genes"
    kb = GeneKB.build(g / "Homo_sapiens.gene_info.gz", g / "gene2go_human.gz", g / "go-basic.obo.gz")
    return {"kb_dir": str(kb.save(tmp_path_factory.mktemp("kb") / "genes"))}


@pytest.fixture(scope="session")
def k562(data_root):
    from softverify.bio.perturbqa import load_table

    return load_table("k562", "de", mirror=data_root / "perturbqa")


@pytest.fixture(scope="session")
def wm_dir(tmp_path_factory, k562):
    """A small one-hot world model fitted with the real bio code on 300 K562 perturbations."""
    from softverify.bio import embeddings as E
    from softverify.bio.worldmodel import FitConfig, WorldModel

    perts = sorted(k562["pert"].unique())[:300]
    tr = k562[k562["pert"].isin(perts)].sample(20000, random_state=0).reset_index(drop=True)
    emb = E.onehot_embedding(sorted(set(tr["pert"]) | set(tr["gene"])))
    wm = WorldModel.fit(tr, emb, FitConfig(hidden=(32, 16), max_epochs=3, batch_size=512), log=lambda m: None)
    return wm.save(tmp_path_factory.mktemp("wm") / "wm"), tr


@pytest.fixture(scope="session")
def coexpr_npz(tmp_path_factory, data_root) -> Path:
    """Pearson co-expression over the 700 PBMCs x 765 genes of scanpy's pbmc68k_reduced."""
    from softverify.bio.coexpression import matrix_from_h5ad

    m = matrix_from_h5ad(data_root / "singlecell" / "10x_pbmc68k_reduced.h5ad", "pearson")
    return m.save(tmp_path_factory.mktemp("coexpr") / "pbmc_pearson.npz")
