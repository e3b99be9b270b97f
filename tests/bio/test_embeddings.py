from __future__ import annotations

import numpy as np
import pytest

from softverify.bio import cell_embeddings as C
from softverify.bio import embeddings as E

GENES = ["TP53", "MDM2", "CDKN1A", "RPL41", "RPS3", "RPL13", "AARS"]


@pytest.fixture(scope="module")
def encoder():
    return E.sentence_encoder()


def test_genept_embeddings_are_semantic(gene_kb, encoder):
    emb = E.genept_embedding(gene_kb, GENES + ["NOT_A_GENE_XYZ"], encoder)
    assert emb.symbols == GENES and emb.dim == 384 and emb.meta["missing"] == 1
    m = emb.matrix(["TP53", "MDM2", "RPL41", "RPS3", "NOT_A_GENE_XYZ"])
    assert np.isnan(m[4]).all() and np.isfinite(m[:4]).all()
    cos = m[:4] @ m[:4].T / np.outer(np.linalg.norm(m[:4], axis=1), np.linalg.norm(m[:4], axis=1))
    # Ribosomal proteins are closer to each other than to the p53 pathway, and vice versa.
    assert cos[2, 3] > cos[2, 0] and cos[0, 1] > cos[0, 2]


def test_save_load_roundtrip_without_pickle(tmp_path, gene_kb):
    emb = E.go_factor_embedding(gene_kb, GENES, dim=4)
    emb.save(tmp_path / "e")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["embedding.json", "embedding.safetensors"]
    back = E.GeneEmbedding.load(tmp_path / "e")
    assert back.kind == "go" and back.symbols == emb.symbols
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    oh = E.onehot_embedding(["A", "B", "A"])
    oh.save(tmp_path / "o")
    oh2 = E.GeneEmbedding.load(tmp_path / "o")
    np.testing.assert_array_equal(oh2.matrix(["b", "A"]), [[0, 1], [1, 0]])
    with pytest.raises(FileNotFoundError, match="no gene embedding"):
        E.GeneEmbedding.load(tmp_path / "missing")


def test_go_factorisation_groups_related_genes(gene_kb):
    genes = ["RPL41", "RPS3", "RPL13", "RPL11", "RPS6", "TP53", "MDM2", "CDKN1A", "ATM", "CHEK2", "GAPDH", "ALDOA"]
    emb = E.go_factor_embedding(gene_kb, genes, dim=6)
    m = emb.matrix(genes)
    assert np.allclose(np.linalg.norm(m, axis=1), 1, atol=1e-4)
    sim = m @ m.T
    assert sim[0, 1] > sim[0, 5] and sim[5, 6] > sim[5, 0]


def test_unknown_kind_and_missing_kb():
    with pytest.raises(ValueError, match="unknown embedding kind 'bert'"):
        E.build_embedding("bert", ["A"])
    with pytest.raises(ValueError, match="needs a gene knowledge base"):
        E.build_embedding("genept", ["A"])


def test_genept_w_on_real_h5ad(data_root, gene_kb):
    adata = C.read_h5ad(data_root / "singlecell" / "decoupler_pbmc3k_160cells.h5ad")
    x, genes = C.expression(adata)
    keep = np.argsort(-x.sum(axis=0))[:40]  # the 40 most expressed genes, for speed
    x, genes = x[:, keep], [genes[i] for i in keep]
    emb = E.go_factor_embedding(gene_kb, genes, dim=8)
    z, frac = C.genept_w(x, genes, emb)
    assert z.shape == (160, 8) and frac > 0.8
    assert np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-4)
    sent = C.cell_sentences(x[:2], genes, top_k=5)
    row = x[0]
    assert sent[0].split()[0] == genes[int(np.argmax(row))]


def test_expression_refuses_scaled_without_raw():
    import anndata

    a = anndata.AnnData(np.array([[-1.0, 2.0], [0.5, 1.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="no .raw"):
        C.expression(a)
