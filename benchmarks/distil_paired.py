"""Centred against permuted, gene by gene: the paired reading of a distil_pergene.py run.

Each arm's two numbers in distil_pergene.py (mean per-gene AUROC, and an interval over genes
per seed) do not say how sure the *difference* between the arms is. The arms are scored on
the same target genes, so the question is paired: for each gene, the student's AUROC
across knockdowns under the centred teacher table minus under its permuted control (each
arm averaged over its seeds), and a bootstrap over genes of the mean difference.

Every final model is scored again with ``softverify eval --protocol genes --score-only``
on the evaluated genes (the rows training's last eval read; its per-gene AUROC is checked
against the one metrics.jsonl logged). Reported beside it: each gene's teacher AUROC on the
same rows, and across genes the Spearman correlation of the student's per-gene AUROC with
the teacher's (does the student do well where the teacher does?).

    SOFTVERIFY_DATA_MIRROR=../shared/data/perturbqa python benchmarks/distil_paired.py \\
        --runs runs/distil_test_q12800 --teacher-table runs/distil_test_q12800/tables/teacher_wm_xline_test_g128.parquet \\
        --arms centred,permuted --seeds 0,1,2 --name distil_paired_test_g128_xline_q12800
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, SHARED_PERTURBQA, machine, write_result  # noqa: E402


def score(final: Path, out: Path, split: str, eval_genes: int) -> list[dict]:
    """The final model's forced scores on the evaluated genes (one eval, cached in ``out``)."""
    if not out.is_file():
        subprocess.run(["softverify", "eval", str(final), "--protocol", "genes", "--split", split,
                        "--set", f"data.eval_genes={eval_genes}", "--set", "prompt.style=direct", "--score-only",
                        "--threads", "2", "-o", str(out)],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = out.with_suffix(".completions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def per_gene(records: list[dict], p: np.ndarray | None = None) -> dict[str, float]:
    """Within-gene AUROC of the DE-oriented forced score (or of the teacher's ``p``)."""
    from softverify.evaluation.run import de_orientation
    from softverify.metrics.ranking import gene_aurocs

    neg, y, s = de_orientation(records)
    if p is not None:
        s = np.where(neg, 1 - p, p)  # the teacher's p is of "yes" to the question as asked
    return gene_aurocs([str(r["gene"]) for r in records], y, s)


def agreement_with(records: list[dict], p: np.ndarray) -> float:
    """Mean over genes of the within-gene Spearman correlation of the student's DE score with
    the teacher's p (the training eval's ``teacher_agreement_per_gene``, here always against
    the raw teacher: a permuted arm's own table is noise)."""
    from softverify.evaluation.run import per_gene_metrics

    neg = np.array([bool(r.get("negated", False)) for r in records])
    wm_p = np.where(neg, 1 - p, p)  # as the trainer's eval records it: p of "yes" to the question as asked
    return float(per_gene_metrics([{**r, "wm_p": float(q)} for r, q in zip(records, wm_p)],
                                  n_boot=10)["teacher_agreement_per_gene"])


def paired_difference(a: dict[str, float], b: dict[str, float], n_boot: int = 2000) -> dict[str, float]:
    """Mean over the genes both score of ``a - b``, its bootstrap interval over genes, and
    the share of genes where ``a`` is higher."""
    from softverify.metrics.ranking import bootstrap_ci

    genes = sorted(set(a) & set(b))
    d = np.array([a[g] - b[g] for g in genes])
    lo, hi = bootstrap_ci(lambda v: v.mean(-1), d, n_boot=n_boot, seed=0, rows=True)
    return {"mean": float(d.mean()), "lo": lo, "hi": hi, "genes": len(genes), "a_higher_frac": float((d > 0).mean()),
            "ties_frac": float((d == 0).mean())}


def mean_ci(a: dict[str, float], n_boot: int = 2000) -> list[float]:
    """Bootstrap interval over genes of the mean of ``a`` (an arm's per-gene AUROC averaged over
    its seeds: the seeds' training noise averaged out, the genes' sampling noise kept)."""
    from softverify.metrics.ranking import bootstrap_ci

    return list(bootstrap_ci(lambda v: v.mean(-1), np.array(list(a.values())), n_boot=n_boot, seed=0, rows=True))


def spearman(a: dict[str, float], b: dict[str, float]) -> float:
    from scipy.stats import spearmanr

    genes = sorted(set(a) & set(b))
    return float(spearmanr([a[g] for g in genes], [b[g] for g in genes]).statistic)


def spearman_ci(a: dict[str, float], b: dict[str, float], n_boot: int = 2000) -> list[float]:
    """The across-gene Spearman correlation's bootstrap interval over genes."""
    from scipy.stats import spearmanr

    from softverify.metrics.ranking import bootstrap_ci

    genes = sorted(set(a) & set(b))
    x, y = np.array([a[g] for g in genes]), np.array([b[g] for g in genes])
    return list(bootstrap_ci(lambda u, v: spearmanr(u, v).statistic, x, y, n_boot=n_boot, seed=0))


def plot(arm_gene: dict[str, dict[str, float]], teacher: dict[str, float], diff: dict, path: Path, arms: list[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for arm, colour in zip(arms, ("tab:blue", "tab:grey", "tab:orange")):
        genes = sorted(set(arm_gene[arm]) & set(teacher))
        ax1.scatter([teacher[g] for g in genes], [arm_gene[arm][g] for g in genes], s=12, alpha=0.7, color=colour,
                    label=f"{arm} (Spearman {spearman(arm_gene[arm], teacher):+.2f})")
    ax1.axhline(0.5, color="k", lw=0.5)
    ax1.axvline(0.5, color="k", lw=0.5)
    ax1.set_xlabel("teacher's AUROC across knockdowns (per target gene)")
    ax1.set_ylabel("student's AUROC across knockdowns (mean over seeds)")
    ax1.set_title("per target gene: student against teacher")
    ax1.legend(fontsize=8)
    a, b = arms[0], arms[1]
    genes = sorted(set(arm_gene[a]) & set(arm_gene[b]))
    d = [arm_gene[a][g] - arm_gene[b][g] for g in genes]
    ax2.hist(d, bins=30, color="tab:blue", alpha=0.8)
    ax2.axvline(0, color="k", lw=0.8)
    ax2.axvline(diff["mean"], color="tab:red", lw=1.5,
                label=f"mean {diff['mean']:+.3f} [{diff['lo']:+.3f}, {diff['hi']:+.3f}]")
    ax2.set_xlabel(f"per-gene AUROC, {a} minus {b}")
    ax2.set_ylabel("target genes")
    ax2.set_title(f"paired over {len(genes)} genes")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="distil_pergene.py's --out-dir (holds <arm>_s<seed>/final)")
    ap.add_argument("--teacher-table", required=True, help="the raw teacher table the arms were centred from")
    ap.add_argument("--arms", default="centred,permuted", help="the first is compared against the second")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--split", default="test")
    ap.add_argument("--eval-genes", type=int, default=128)
    ap.add_argument("--name", default="distil_paired")
    args = ap.parse_args()
    os.environ.setdefault("SOFTVERIFY_DATA_MIRROR", str(SHARED_PERTURBQA))
    from softverify.bio.teacher_table import load_teacher

    runs, arms = Path(args.runs), args.arms.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    table = load_teacher({"p_table": args.teacher_table})
    by_run, checks, teacher, agreement = {}, [], None, {}
    for arm in arms:
        for seed in seeds:
            d = runs / f"{arm}_s{seed}"
            if not (d / "final").is_dir():
                print(f"{arm} seed {seed}: no final model in {d}, left out", flush=True)
                continue
            recs = score(d / "final", runs / "paired" / f"{arm}_s{seed}.json", args.split, args.eval_genes)
            by_run[(arm, seed)] = per_gene(recs)
            logged = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
            logged = [r for r in logged if "eval_forced/auc_per_gene" in r][-1]["eval_forced/auc_per_gene"]
            again = float(np.mean(list(by_run[(arm, seed)].values())))
            checks.append({"arm": arm, "seed": seed, "logged": logged, "rescored": again})
            print(f"{arm} seed {seed}: per-gene AUROC {again:.4f} (training's last eval logged {logged:.4f})",
                  flush=True)
            p = np.asarray(table.predict_proba([r["pert"] for r in recs], [r["gene"] for r in recs]), dtype=np.float64)
            if teacher is None:
                teacher = per_gene(recs, p)
            agreement[(arm, seed)] = agreement_with(recs, p)
    arm_gene = {}
    for arm in arms:
        runs_of = [g for (a, _), g in by_run.items() if a == arm]
        genes = sorted(set.intersection(*[set(g) for g in runs_of])) if runs_of else []
        arm_gene[arm] = {g: float(np.mean([r[g] for r in runs_of])) for g in genes}
    diff = paired_difference(arm_gene[arms[0]], arm_gene[arms[1]])
    summary = {
        "arms": {arm: {"seeds": sorted(s for (a, s) in by_run if a == arm),
                       "auc_per_gene_mean_over_seeds": float(np.mean(list(arm_gene[arm].values()))),
                       "auc_per_gene_mean_over_seeds_ci": mean_ci(arm_gene[arm]),
                       "spearman_with_teacher_across_genes": spearman(arm_gene[arm], teacher),
                       "spearman_with_teacher_ci": spearman_ci(arm_gene[arm], teacher),
                       "within_gene_agreement_with_teacher": {s: agreement[(a, s)] for (a, s) in agreement if a == arm}}
                 for arm in arms},
        "teacher_auc_per_gene": float(np.mean(list(teacher.values()))),
        f"paired_{arms[0]}_minus_{arms[1]}": diff,
        "rescore_checks": checks,
    }
    out = RESULTS / f"{args.name}.png"
    plot(arm_gene, teacher, diff, out, arms)
    write_result(args.name, {"machine": machine(), "args": vars(args), "summary": summary,
                             "per_gene": {"teacher": teacher, **arm_gene}})
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
