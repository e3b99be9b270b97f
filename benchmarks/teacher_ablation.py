"""Which feature family and objective make a world model rank knockdowns: each cell line held out in turn.

For each held-out line (K562, RPE1, HepG2) every variant is fitted on the *other two* lines only
(`softverify worldmodel fit` with the same library calls) and scored on the held-out line's upstream
test split -- and, for K562, on the validation perturbations recipes are chosen on -- with
PerturbQA's ``auc_per_gene`` (95 % interval over genes) beside the pooled AUROC, AUPRC and the
expected calibration error, and the two per-gene lookups on the same rows:

  pooled             the original gbdt: gene statistics pooled over the training lines, out of fold
                     by perturbation (a training row never sees its own knockdown's strength), + both
                     genes' embeddings
  xline_rates        cross_line, target/knockdown rates and counts from the other line only
  xline_pair         + the pair's own label in the other line (the retrieval signal)
  xline_full         + the neighbourhood scores through the gene embedding (the shipped teacher)
  xline_lambdarank   xline_full with LightGBM lambdarank, one query per (line, target gene)

    SOFTVERIFY_DATA_MIRROR=../shared/data/perturbqa python benchmarks/teacher_ablation.py \\
        --embedding runs/assets/emb_go64 --out teacher_ablation
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_PERTURBQA, machine, write_result  # noqa: E402

LINES = ("k562", "rpe1", "hepg2")
RATES = ("target_rate", "target_log_n", "pert_rate", "pert_log_n", "pert_target_rate")
VARIANTS = {
    "pooled": {"features": "pooled"},
    "xline_rates": {"features": "cross_line", "feature_subset": RATES},
    "xline_pair": {"features": "cross_line", "feature_subset": (*RATES, "pair_rate", "pair_log_n")},
    "xline_full": {"features": "cross_line"},
    "xline_lambdarank": {"features": "cross_line", "objective": "lambdarank"},
}


def score(wm, rows, mirror, exclude=None) -> dict:
    from softverify.bio.lookups import lookup_report
    from softverify.bio.metrics import binary_metrics
    from softverify.metrics.calibration import expected_calibration_error
    from softverify.metrics.ranking import auc_per_gene

    p = wm.predict_proba(rows["pert"].tolist(), rows["gene"].tolist())
    y = rows["label"].to_numpy()
    pg = auc_per_gene(rows["gene"].to_numpy(), y, p)
    m = binary_metrics(p, y, wm.threshold)
    lk = lookup_report(rows, y, mirror=mirror, exclude_perts=exclude)
    return {"auc_per_gene": pg.auc_per_gene, "lo": pg.lo, "hi": pg.hi, "genes": pg.genes, "rows": pg.rows,
            "auroc": m["auroc"], "auprc": m["auprc"], "ece": expected_calibration_error(p, y),
            "lookups": {k: v["auc_per_gene"] for k, v in lk.items()}}


def plot(results: list[dict], path: Path) -> None:
    """Per-gene AUROC (95 % CI over genes) of each variant, one group per held-out line's test
    split, with SUMMER's published number and the retrieval lookup on the same rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summer = {"k562": 0.62, "rpe1": 0.59, "hepg2": 0.62}
    rows = [r for r in results if r["split"] == "test"]
    lines = list(dict.fromkeys(r["held_out"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 4.2))
    w = 0.8 / len(variants)
    for j, v in enumerate(variants):
        xs, ys, lo, hi = [], [], [], []
        for i, line in enumerate(lines):
            r = next((r for r in rows if r["held_out"] == line and r["variant"] == v), None)
            if r:
                xs.append(i - 0.4 + w * (j + 0.5))
                ys.append(r["auc_per_gene"])
                lo.append(r["auc_per_gene"] - r["lo"])
                hi.append(r["hi"] - r["auc_per_gene"])
        ax.bar(xs, ys, w * 0.9, yerr=[lo, hi], capsize=2, label=v, color=f"C{j}")
    for i, line in enumerate(lines):
        ax.hlines(summer[line], i - 0.42, i + 0.42, colors="k", linestyles="--", lw=1,
                  label="SUMMER (trained on the line)" if i == 0 else None)
        r = next(r for r in rows if r["held_out"] == line)
        ax.hlines(r["lookups"]["pair_other_else_a_rate"], i - 0.42, i + 0.42, colors="grey", linestyles=":", lw=1.2,
                  label="retrieval lookup, same rows" if i == 0 else None)
    ax.axhline(0.5, color="grey", lw=0.6)
    ax.set_xticks(range(len(lines)), [f"{line} held out (test)" for line in lines])
    ax.set_ylim(0.45, 0.7)
    ax.set_ylabel("PerturbQA auc_per_gene")
    ax.set_title("World models that never saw the held-out line: which features rank its knockdowns", fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedding", default="runs/assets/emb_go64")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--held-out", default=",".join(LINES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="teacher_ablation")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from the results JSON")
    args = ap.parse_args()
    if args.plot_only:
        import json

        plot(json.loads(Path(f"benchmarks/results/{args.out}.json").read_text())["results"],
             Path(f"benchmarks/results/{args.out}.png"))
        return 0
    mirror = os.environ.get("SOFTVERIFY_DATA_MIRROR", str(SHARED_PERTURBQA))
    from softverify.bio import perturbqa
    from softverify.bio.embeddings import GeneEmbedding
    from softverify.bio.gbdt_worldmodel import GBDTConfig, GBDTWorldModel
    from softverify.bio.questions import select_split
    from softverify.config import DataConfig

    emb = GeneEmbedding.load(args.embedding)
    tables = perturbqa.load_tables(list(LINES), "de", mirror=mirror)
    results = []
    for held in args.held_out.split(","):
        train = tables[tables["cell_line"] != held].reset_index(drop=True)
        evals = {"test": tables[(tables["cell_line"] == held) & (tables["split"] == "test")].reset_index(drop=True)}
        exclude = {}
        if held == "k562":
            val = select_split(DataConfig(cell_lines=[held], mirror=mirror), "val").reset_index(drop=True)
            evals["val"], exclude["val"] = val, set(val["pert"])
        for name in args.variants.split(","):
            t = time.perf_counter()
            wm = GBDTWorldModel.fit(train, emb,
                                    GBDTConfig(threads=args.threads, **VARIANTS[name]), log=lambda m: None)
            fit_s = time.perf_counter() - t
            for split, rows in evals.items():
                r = {"held_out": held, "variant": name, "split": split, "fit_s": fit_s,
                     "rounds": wm.meta["best_iteration"], **score(wm, rows, mirror, exclude.get(split))}
                results.append(r)
                print(f"{held:6s} {split:4s} {name:17s} auc_per_gene {r['auc_per_gene']:.3f} [{r['lo']:.3f}, "
                      f"{r['hi']:.3f}] pooled {r['auroc']:.3f} auprc {r['auprc']:.3f} ece {r['ece']:.3f} "
                      f"(retrieval {r['lookups']['pair_other_else_a_rate']:.3f}; fit {fit_s:.0f} s)", flush=True)
            write_result(args.out, {"machine": machine(), "args": vars(args), "results": results})
    plot(results, Path(f"benchmarks/results/{args.out}.png"))
    print(f"wrote benchmarks/results/{args.out}.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
