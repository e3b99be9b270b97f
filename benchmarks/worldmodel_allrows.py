"""World models vs the target-gene prior on a held-out cell line, on every row.

``binary_metrics`` reports each model on the rows it covers *and* on all rows with the
uncovered ones answered "no" (issue 18 item 10, issue 14): a baseline that abstains on 15 %
of the rows must not win by skipping them. Scores saved world models (any ``worldmodel fit``
output) beside the prior computed from the training lines, with ECE and Brier on the
covered rows (``softverify.calibration``).

    SOFTVERIFY_DATA_MIRROR=../shared/data/perturbqa python benchmarks/worldmodel_allrows.py \\
        --models runs/assets/wm_go64,runs/assets/wm_gbdt_go64 --train rpe1,hepg2 --eval k562
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED_PERTURBQA, machine  # noqa: E402


def mean_group_auroc(p: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    """Mean AUROC within groups (target genes or perturbations) that hold both classes, over
    covered rows, and how many groups that was. A per-gene constant (the prior) scores 0.5."""
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(p)
    vals = []
    for g in np.unique(groups[ok]):
        m = ok & (groups == g)
        if 0 < y[m].sum() < m.sum():
            vals.append(roc_auc_score(y[m], p[m]))
    return (float(np.mean(vals)) if vals else float("nan")), len(vals)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="comma-separated world-model directories")
    ap.add_argument("--train", default="rpe1,hepg2", help="the lines the models were trained on (for the prior)")
    ap.add_argument("--eval", default="k562", help="held-out cell line (its upstream test split is scored)")
    ap.add_argument("--out", default="worldmodel_allrows")
    args = ap.parse_args()

    from softverify.bio import perturbqa
    from softverify.bio.metrics import best_mcc_threshold, binary_metrics
    from softverify.bio.worldmodel import WorldModel, predict_prior, target_prior
    from softverify.calibration import brier_score, expected_calibration_error

    mirror = os.environ.get("SOFTVERIFY_DATA_MIRROR") or str(SHARED_PERTURBQA)
    train = perturbqa.load_tables(perturbqa.parse_cell_lines(args.train), "de", mirror=mirror)
    ev = perturbqa.load_table(args.eval, "de", mirror=mirror)
    ev = ev[ev["split"] == "test"]
    y = ev["label"].to_numpy()
    preds = {"target-gene prior": (predict_prior(target_prior(train), list(ev["gene"])), None)}
    for d in [m for m in args.models.split(",") if m]:
        wm = WorldModel.load(d)
        preds[Path(d).name] = (wm.predict_proba(list(ev["pert"]), list(ev["gene"])), wm.threshold)
    rows = {}
    for name, (p, thr) in preds.items():
        ok = np.isfinite(p)
        thr = best_mcc_threshold(p[ok], y[ok]) if thr is None else thr  # the prior has no validation split
        m = binary_metrics(p, y, thr)
        m["ece"] = expected_calibration_error(p[ok], y[ok])
        m["brier"] = brier_score(p[ok], y[ok])
        m["per_gene_auroc"], m["genes_scored"] = mean_group_auroc(p, y, ev["gene"].to_numpy())
        m["per_pert_auroc"], m["perts_scored"] = mean_group_auroc(p, y, ev["pert"].to_numpy())
        rows[name] = m
    out = {"machine": machine(), "train": args.train, "eval": args.eval, "n": int(len(y)), "models": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=1, default=float))
    print(f"{args.eval} test, {len(y)} rows; trained on {args.train}")
    print("| model | coverage | covered: AUROC | AUPRC | MCC | all rows: AUROC | AUPRC | MCC | ECE | Brier "
          "| per-gene AUROC | per-perturbation AUROC |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in rows.items():
        a = m["all_rows"]
        print(f"| {name} | {m['coverage']:.3f} | {m['auroc']:.3f} | {m['auprc']:.3f} | {m['mcc']:.3f} | "
              f"{a['auroc']:.3f} | {a['auprc']:.3f} | {a['mcc']:.3f} | {m['ece']:.3f} | {m['brier']:.3f} | "
              f"{m['per_gene_auroc']:.3f} ({m['genes_scored']}) | {m['per_pert_auroc']:.3f} ({m['perts_scored']}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
