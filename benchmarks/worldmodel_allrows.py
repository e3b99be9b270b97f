"""World models vs the priors on held-out cell lines (leave one line out), on every row.

``binary_metrics`` reports each model on the rows it covers *and* on all rows with the
uncovered ones answered "no" (issue 18 item 10, issue 14): a baseline that abstains on 15 %
of the rows must not win by skipping them. Scores saved world models (any ``worldmodel fit``
output) beside two priors computed from the training lines -- the target gene's DE rate and
the perturbation's DE rate -- with ECE, Brier and a reliability diagram on the covered rows
(``softverify.metrics.calibration``), the mean AUROC within each target gene and perturbation, and
each model's AUROC on the rows the target-gene prior covers (like for like with the prior).

The held-out line's upstream *test* split is scored (its perturbations, like K562's, are
the upstream test ones); the models are trained on every row of the other lines. Each
``--heldout LINE=DIR,DIR`` gives one held-out line and its models; a model's recorded
training lines must be the other lines (else an error names both). One JSON for all lines,
one reliability PNG per line:

    SOFTVERIFY_DATA_MIRROR=../shared/data/perturbqa python benchmarks/worldmodel_allrows.py \\
        --heldout k562=runs/assets/wm_go64,runs/assets/wm_gbdt_go64 \\
        --heldout rpe1=runs/assets_loco/wm_go64_rpe1,runs/assets_loco/wm_gbdt_go64_rpe1 \\
        --heldout hepg2=runs/assets_loco/wm_go64_hepg2,runs/assets_loco/wm_gbdt_go64_hepg2 --out worldmodel_loco

(``--models A,B --eval k562 [--train rpe1,hepg2]`` is the one-line shorthand.)
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

LINES = ("k562", "rpe1", "hepg2")


def mean_group_auroc(p: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    """Mean AUROC within groups (target genes or perturbations) that hold both classes, over
    covered rows, and how many groups that was: PerturbQA's ``auc_per_gene`` when the groups
    are target genes (softverify.metrics.ranking). A per-gene constant (the prior) scores 0.5."""
    from softverify.metrics.ranking import auc_per_gene

    r = auc_per_gene(groups, y, p, n_boot=1)
    return r.auc_per_gene, r.genes


def parse_heldout(specs: list[str]) -> dict[str, list[str]]:
    """``["rpe1=A,B", ...]`` -> ``{"rpe1": ["A", "B"]}``."""
    out: dict[str, list[str]] = {}
    for s in specs:
        line, sep, dirs = s.partition("=")
        if not sep or line.strip().lower() not in LINES:
            raise SystemExit(f"--heldout {s!r}: expected LINE=DIR[,DIR...] with LINE one of {list(LINES)}")
        out[line.strip().lower()] = [d for d in dirs.split(",") if d]
    return out


def model_label(wm) -> str:
    return "LightGBM" if wm.meta.get("model_kind") == "gbdt" else "pair MLP"


def score_line(held: str, model_dirs: list[str], train_lines: list[str], mirror: str) -> dict:
    """Priors and models on ``held``'s test split; reliability bins per model."""
    from softverify.bio import perturbqa
    from softverify.bio.metrics import best_mcc_threshold, binary_metrics
    from softverify.bio.worldmodel import WorldModel, pert_prior, predict_prior, target_prior
    from softverify.metrics.calibration import brier_score, expected_calibration_error, reliability_bins

    train = perturbqa.load_tables(train_lines, "de", mirror=mirror)
    ev = perturbqa.load_table(held, "de", mirror=mirror)
    ev = ev[ev["split"] == "test"]
    y = ev["label"].to_numpy()
    preds = {"target-gene prior": (predict_prior(target_prior(train), list(ev["gene"])), None, "prior"),
             "perturbation prior": (predict_prior(pert_prior(train), list(ev["pert"])), None, "prior")}
    for d in model_dirs:
        wm = WorldModel.load(d)
        lines = sorted(wm.meta.get("cell_lines") or [])
        if lines != sorted(train_lines):
            raise SystemExit(f"world model {d!r} was trained on {lines}; held out {held!r} needs one trained on "
                             f"{sorted(train_lines)}")
        preds[Path(d).name] = (wm.predict_proba(list(ev["pert"]), list(ev["gene"])), wm.threshold, model_label(wm))
    from sklearn.metrics import roc_auc_score

    prior_rows = np.isfinite(preds["target-gene prior"][0])  # a like-for-like comparison with the prior
    rows, curves = {}, {}
    for name, (p, thr, kind) in preds.items():
        ok = np.isfinite(p)
        thr = best_mcc_threshold(p[ok], y[ok]) if thr is None else thr  # the priors have no validation split
        m = binary_metrics(p, y, thr)
        m["kind"] = kind
        both = prior_rows & ok
        m["auroc_on_prior_rows"] = float(roc_auc_score(y[both], p[both])) if 0 < y[both].sum() < both.sum() else None
        m["prior_rows_covered"] = float(both.sum() / max(prior_rows.sum(), 1))
        m["ece"] = expected_calibration_error(p[ok], y[ok])
        m["brier"] = brier_score(p[ok], y[ok])
        from softverify.metrics.ranking import auc_per_gene

        pg = auc_per_gene(ev["gene"].to_numpy(), y, p)
        m["per_gene_auroc"], m["genes_scored"] = pg.auc_per_gene, pg.genes
        m["per_gene_auroc_ci"] = [pg.lo, pg.hi]
        m["per_pert_auroc"], m["perts_scored"] = mean_group_auroc(p, y, ev["pert"].to_numpy())
        rows[name] = m
        curves[name] = reliability_bins(p[ok], y[ok])
    return {"train": list(train_lines), "eval": held, "split": "test", "n": int(len(y)),
            "positive_rate": float(y.mean()), "perts": int(ev["pert"].nunique()), "models": rows,
            "reliability": curves}


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def table(res: dict) -> str:
    lines = [f"{res['eval']} test, {res['n']} rows ({res['perts']} perturbations, {res['positive_rate']:.1%} DE); "
             f"trained on {'+'.join(res['train'])}",
             "| model | coverage | covered: AUROC | AUPRC | MCC | all rows: AUROC | AUPRC | MCC | ECE | Brier "
             "| per-gene AUROC | per-perturbation AUROC | AUROC on the target prior's rows |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in res["models"].items():
        a = m["all_rows"]
        lines.append(f"| {name} | {m['coverage']:.3f} | {m['auroc']:.3f} | {m['auprc']:.3f} | {m['mcc']:.3f} | "
                     f"{a['auroc']:.3f} | {a['auprc']:.3f} | {a['mcc']:.3f} | {m['ece']:.3f} | {m['brier']:.3f} | "
                     f"{m['per_gene_auroc']:.3f} [{m['per_gene_auroc_ci'][0]:.3f}, {m['per_gene_auroc_ci'][1]:.3f}] "
                     f"({m['genes_scored']}) | {m['per_pert_auroc']:.3f} "
                     f"({m['perts_scored']}) | {_f(m['auroc_on_prior_rows'])} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heldout", action="append", default=[], metavar="LINE=DIR,DIR",
                    help="a held-out line and its world models (repeatable); trained on the other lines")
    ap.add_argument("--models", help="one-line shorthand: comma-separated world-model directories for --eval")
    ap.add_argument("--eval", default="k562", help="the shorthand's held-out cell line")
    ap.add_argument("--train", default=None, help="the shorthand's training lines (default: the other two of "
                    "k562, rpe1, hepg2)")
    ap.add_argument("--out", default="worldmodel_allrows", help="results name: <out>.json, "
                    "<out>_reliability_<line>.png")
    args = ap.parse_args()

    from softverify.metrics.calibration import plot_reliability

    held = parse_heldout(args.heldout)
    if args.models:
        held[args.eval] = [m for m in args.models.split(",") if m]
    if not held:
        raise SystemExit("nothing to score: give --heldout LINE=DIR,DIR (repeatable) or --models with --eval")
    mirror = os.environ.get("SOFTVERIFY_DATA_MIRROR") or str(SHARED_PERTURBQA)
    out = {"machine": machine(), "split": "test", "lines": {}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    for line, dirs in held.items():
        train = (args.train.split(",") if args.train and args.models and line == args.eval
                 else [x for x in LINES if x != line])
        res = score_line(line, dirs, train, mirror)
        out["lines"][line] = res
        png = RESULTS / f"{args.out}_reliability_{line}.png"
        curves = {f"{n} (ECE {res['models'][n]['ece']:.3f}, n={sum(b['n'] for b in c)})": c
                  for n, c in res["reliability"].items()}
        plot_reliability(curves, png, f"{line} held out: its test split, {res['n']} rows; trained on "
                         f"{'+'.join(train)}\nreliability on each model's covered rows (10 equal-width bins)")
        print(table(res), flush=True)
        print(f"wrote {png}", flush=True)
    tmp = RESULTS / f".{args.out}.json.tmp"
    tmp.write_text(json.dumps(out, indent=1, default=float))
    tmp.replace(RESULTS / f"{args.out}.json")
    print(f"wrote {RESULTS / (args.out + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
