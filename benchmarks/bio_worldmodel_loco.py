"""World models trained on RPE1+HepG2, evaluated on the K562 upstream test split.

Compares one-hot, GenePT-style (MiniLM over KB descriptions) and GO-factorisation gene
embeddings with the target-gene prior (how often the gene is DE in the training lines).
Metrics on each model's own coverage and on the rows every method can score.

    python benchmarks/bio_worldmodel_loco.py [--data ../shared/data] [--max-rows N] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from softverify.bio import embeddings as E
from softverify.bio import perturbqa
from softverify.bio.genes import GeneKB
from softverify.bio.metrics import best_mcc_threshold, binary_metrics
from softverify.bio.worldmodel import FitConfig, WorldModel, predict_prior, target_prior
from softverify.config import cache_dir

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    ap.add_argument("--max-rows", type=int, default=None, help="subsample training rows (speed)")
    ap.add_argument("--max-epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", default="onehot,genept,go")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = Path(a.data).resolve()
    mirror = data / "perturbqa"
    train = perturbqa.load_tables(["rpe1", "hepg2"], "de", mirror=mirror)
    test = perturbqa.load_table("k562", "de", mirror=mirror)
    test = test[test["split"] == "test"].reset_index(drop=True)
    symbols = sorted(set(train["pert"]) | set(train["gene"]) | set(test["pert"]) | set(test["gene"]))
    g = data / "genes"
    kb = GeneKB.build(g / "Homo_sapiens.gene_info.gz", g / "gene2go_human.gz", g / "go-basic.obo.gz",
                      g / "gene_summaries_ncbi_uniprot.json")
    y = test["label"].to_numpy()
    preds: dict[str, np.ndarray] = {}
    report: dict = {"train_rows": len(train), "test_rows": len(test), "models": {}}

    prior = target_prior(train)
    pp = predict_prior(prior, list(test["gene"]))
    # Prior threshold picked on the training rows, like the models' validation threshold.
    thr = best_mcc_threshold(predict_prior(prior, list(train["gene"])), train["label"].to_numpy())
    preds["target_prior"] = pp
    report["models"]["target_prior"] = {"own": binary_metrics(pp, y, thr), "threshold": thr}

    for kind in a.kinds.split(","):
        t0 = time.time()
        cache = cache_dir() / "bench" / f"emb-{kind}"
        if (cache / "embedding.json").is_file():
            emb = E.GeneEmbedding.load(cache)
        else:
            emb = E.build_embedding(kind, symbols, kb=None if kind == "onehot" else kb)
            emb.save(cache)
        t_emb = time.time() - t0
        wm = WorldModel.fit(train, emb, FitConfig(max_epochs=a.max_epochs, threads=a.threads, max_rows=a.max_rows),
                            cell_lines=["rpe1", "hepg2"])
        p = wm.predict_proba(list(test["pert"]), list(test["gene"]))
        preds[kind] = p
        report["models"][kind] = {
            "own": binary_metrics(p, y, wm.threshold), "threshold": wm.threshold, "val": wm.meta["val"],
            "best_epoch": wm.meta["best_epoch"], "embedding_genes": len(emb.symbols), "dim": emb.dim,
            "seconds_embed": round(t_emb, 1), "seconds_total": round(time.time() - t0, 1),
        }
        print(kind, json.dumps(report["models"][kind]["own"]), flush=True)

    common = np.all([np.isfinite(p) for p in preds.values()], axis=0)
    report["common_rows"] = int(common.sum())
    for name, p in preds.items():
        thr_m = report["models"][name]["threshold"]
        q = np.where(common, p, np.nan)
        report["models"][name]["common"] = binary_metrics(q, y, thr_m)
    print(json.dumps(report, indent=1, default=float))
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
