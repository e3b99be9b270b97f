"""GenePT-w / GenePT-s cell-type annotation on pbmc68k_reduced (cosine kNN, 5-fold).

Baselines: kNN on the raw log-normalised expression (adata.raw) and on the scaled X.

    python benchmarks/bio_celltype_knn.py [--data ../shared/data] [--k 10]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from softverify.bio import cell_embeddings as C
from softverify.bio import embeddings as E
from softverify.bio.genes import GeneKB

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    data = Path(a.data).resolve()
    adata = C.read_h5ad(data / "singlecell" / "10x_pbmc68k_reduced.h5ad")
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    x, genes = C.expression(adata)  # adata.raw: log-normalised, non-negative
    g = data / "genes"
    kb = GeneKB.build(g / "Homo_sapiens.gene_info.gz", g / "gene2go_human.gz", g / "go-basic.obo.gz",
                      g / "gene_summaries_ncbi_uniprot.json")
    enc = E.sentence_encoder()
    emb = E.genept_embedding(kb, genes, enc)
    zw, frac = C.genept_w(x, genes, emb)
    zs = C.genept_s(x, genes, enc, top_k=100)
    scaled = np.asarray(adata.X, dtype=np.float32)
    res = {
        "cells": int(x.shape[0]), "genes": len(genes), "gene_embedding_coverage": frac, "k": a.k,
        "raw_lognorm_knn": C.knn_annotation_scores(x, labels, k=a.k),
        "scaled_X_knn": C.knn_annotation_scores(scaled, labels, k=a.k),
        "genept_w_knn": C.knn_annotation_scores(zw, labels, k=a.k),
        "genept_s_knn": C.knn_annotation_scores(zs, labels, k=a.k),
    }
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
