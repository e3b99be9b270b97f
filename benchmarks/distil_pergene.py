"""What carries a teacher's knockdown knowledge into the student? Per-gene AUROC, arms x seeds.

Each arm is the same `softverify train` pipeline (direct style, enumerated estimator, top
layers trained, a world-model verifier reading a *teacher table*, steps stratified by the
teacher's decisions); only the table differs:

  teacher    the teacher's p over the pool (--teacher: the RPE1+HepG2 world model, never saw K562, or
             a lookup over the other lines such as the retrieval teacher pair_other_else_a_rate),
             threshold 'median'
  centred    the same p centred per target gene (--center gene_rank: its percentile among the
             gene's rows; gene: on the logit scale), the hub signal removed and each gene's order
             of knockdowns kept, threshold 0.5
  permuted   control: the centred table's p shuffled across the pool's pairs (same rewards,
             unrelated to their pairs), threshold 0.5
  lookup     control: B's DE rate in RPE1+HepG2 as the teacher (knows hubs, nothing about
             knockdowns), threshold 'median'
  base       no training (the shipped SmolLM2-135M)

Setting: transductive on the validation split. The pool is every pair of the K562 validation
perturbations (a seeded 10 % of the upstream train perturbations), or with --pool eval_genes
only the pairs of the evaluated target genes; the teacher scores them, their labels are
never read in training; the periodic eval reads the labels of whole validation target
genes. So this chooses recipes without touching K562 test.

With --train-split (and --pool eval_genes) the setting is inductive: the pool is that split's
pairs of the evaluated target genes (e.g. --train-split train --split test: other knockdowns
of the K562 test genes, never one of the evaluated knockdowns), so what reaches the eval must
generalise across knockdowns rather than recall the teacher's answer on the very question.

Budget in questions: --steps x --prompts. Reported per arm: PerturbQA's auc_per_gene (mean
+- sd over seeds, and each seed's 95 % interval over genes), the pooled AUROC, the teacher's
per-gene AUROC on the same rows and the student's within-gene agreement with it, and the
lookups on the same rows.

    SOFTVERIFY_DATA_MIRROR=../shared/data/perturbqa python benchmarks/distil_pergene.py \\
        --teacher runs/assets/wm_go64 --arms teacher,centred,permuted --seeds 0,1,2 --steps 100 --prompts 32
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, SHARED_PERTURBQA, machine, write_result  # noqa: E402

ARMS = ("base", "teacher", "centred", "permuted", "lookup")


def build_tables(teacher: str, out: Path, split: str, eval_genes: int | None, center: str,
                 train_split: str | None = None) -> dict[str, Path]:
    """The arms' teacher tables over the pool (``softverify worldmodel table``). With
    ``eval_genes`` the pool is the evaluated genes' pairs only (the verifier abstains on the
    rest, and stratified steps leave rows it cannot score out of training). With a
    ``train_split`` other than ``split`` (the inductive setting) the pool is that split's
    pairs of the evaluated genes: other knockdowns of the same target genes, none of the
    evaluated knockdowns."""
    inductive = bool(train_split) and train_split != split
    out.mkdir(parents=True, exist_ok=True)
    src = ["--lookup", teacher.split(":", 1)[1]] if teacher.startswith("lookup:") else ["--model", teacher]
    specs = {"teacher": src, "centred": [*src, "--center", center],
             "permuted": [*src, "--center", center, "--permute-seed", "1234"],
             "lookup": ["--lookup", "b_rate_other_lines"]}
    tag = teacher.split(":", 1)[1] if teacher.startswith("lookup:") else Path(teacher).name
    paths = {}
    for arm, extra in specs.items():
        pool = ["--eval-genes", str(eval_genes)] if eval_genes else []
        if inductive:
            pool = ["--genes-of", split, "--eval-genes", str(eval_genes)]
        c = f"_{center}" if arm in ("centred", "permuted") else ""
        pool_split = train_split if inductive else split
        ind = f"_of_{split}" if inductive else ""
        p = out / (f"{arm}{c}_{tag if arm != 'lookup' else 'b_rate'}_{pool_split}{ind}"
                   f"{'_g%d' % eval_genes if eval_genes else ''}.parquet")
        if not p.is_file():
            subprocess.run(["softverify", "worldmodel", "table", "--split", pool_split, *pool, *extra, "--out", str(p)],
                           check=True, cwd=REPO)
        paths[arm] = p
    return paths


def train_arm(arm: str, table: Path, seed: int, args, run_dir: Path) -> dict:
    threshold = "median" if arm in ("teacher", "lookup") else "0.5"
    ov = [
        "data.split=" + (args.train_split or args.split), "data.eval_split=" + args.split, "data.balance=false", "data.max_prompts=null",
        f"data.eval_genes={args.eval_genes}", f"data.seed={seed}", "data.stratify_by=teacher",
        f"trainer.seed={seed}", f"trainer.steps={args.steps}", f"trainer.eval_every={args.eval_every}",
        "trainer.checkpoint_every=0", f"trainer.output_dir={run_dir}", "trainer.progress=false",
        f"rollout.prompts_per_step={args.prompts}", f"learner.lr={args.lr}", f"learner.train_layers={args.train_layers}",
        "learner.lr_warmup_steps=5",
        f"verifiers=[{{kind: world_model, name: teacher, params: {{p_table: {table}, threshold: {threshold}}}}}]",
        *args.set,
    ]
    t0 = time.time()
    cmd = ["softverify", "train"] + [x for o in ov for x in ("--set", o)]
    log = run_dir.with_suffix(".log")
    finished = (run_dir / "final").is_dir()  # a run that ended but whose record was not written: read it back
    if not finished:
        with open(log, "w") as f:
            subprocess.run(cmd, check=True, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_forced/auc_per_gene" in r]
    return {"arm": arm, "seed": seed, "wall_s": None if finished else time.time() - t0,
            "questions": args.steps * args.prompts,
            "curve": [{k: r.get(k) for k in ("step", "eval_forced/auc_per_gene", "eval_forced/auc_per_gene_lo",
                                              "eval_forced/auc_per_gene_hi", "eval_forced/auroc",
                                              "eval_forced/teacher_auc_per_gene",
                                              "eval_forced/teacher_agreement_per_gene", "policy_expected_reward")}
                      for r in evals],
            "final": {k.split("/", 1)[1]: v for k, v in evals[-1].items() if k.startswith("eval_forced/")}}


def eval_base(args) -> dict:
    out = Path(args.out_dir) / "base_eval.json"
    subprocess.run(["softverify", "eval", "smollm2", "--protocol", "genes", "--split", args.split,
                    "--set", f"data.eval_genes={args.eval_genes}", "--set", "prompt.style=direct", "--score-only",
                    "--threads", "2", "-o", str(out)],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    m = json.loads(out.read_text())
    return {"arm": "base", "seed": None, "final": m["forced"], "lookups": m.get("lookups")}


def summarise(runs: list[dict]) -> dict:
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        fin = [r["final"] for r in runs if r["arm"] == arm]
        g = np.array([f["auc_per_gene"] for f in fin])
        out[arm] = {"seeds": len(fin), "auc_per_gene_mean": float(g.mean()),
                    "auc_per_gene_sd": float(g.std(ddof=1)) if len(g) > 1 else None,
                    "auc_per_gene_ci_per_seed": [[f["auc_per_gene_lo"], f["auc_per_gene_hi"]] for f in fin],
                    "auroc_mean": float(np.mean([f["auroc"] for f in fin])),
                    "teacher_auc_per_gene": fin[0].get("teacher_auc_per_gene"),
                    # None where the table has no within-gene order (a lookup of B: constant per gene)
                    "agreement_mean": (float(np.mean(agree)) if (agree := [f["teacher_agreement_per_gene"] for f in fin
                                       if f.get("teacher_agreement_per_gene") is not None]) else None)}
    return out


def plot(runs: list[dict], path: Path, split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    arms = list(dict.fromkeys(r["arm"] for r in runs))
    for i, arm in enumerate(arms):
        for r in (r for r in runs if r["arm"] == arm):
            f = r["final"]
            ax.errorbar(i + (0.1 * (r["seed"] or 0) - 0.1), f["auc_per_gene"],
                        yerr=[[f["auc_per_gene"] - f["auc_per_gene_lo"]], [f["auc_per_gene_hi"] - f["auc_per_gene"]]],
                        fmt="o", capsize=3, color=f"C{i}")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    t = next((r["final"].get("teacher_auc_per_gene") for r in runs if r["final"].get("teacher_auc_per_gene")), None)
    if t:
        ax.axhline(t, color="k", lw=0.8, ls=":", label=f"teacher {t:.3f}")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel(f"auc_per_gene (K562 {'validation' if split == 'val' else split} genes)")
    ax.set_title("Student per-gene AUROC by teacher table (each seed, 95% CI over genes)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_curves(runs: list[dict], path: Path, split: str) -> None:
    """Per-gene AUROC and within-gene agreement with the teacher against questions trained,
    one line per (arm, seed): where more exposure stops paying."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    arms = list(dict.fromkeys(r["arm"] for r in runs if r.get("curve")))
    for r in (r for r in runs if r.get("curve")):
        per_step = r["questions"] / r["curve"][-1]["step"] if r["curve"][-1]["step"] else 0
        q = [c["step"] * per_step for c in r["curve"]]
        col = f"C{arms.index(r['arm'])}"
        g = [c["eval_forced/auc_per_gene"] for c in r["curve"]]
        a1.plot(q, g, "o-", color=col, label=f"{r['arm']} s{r['seed']}")
        a1.fill_between(q, [c["eval_forced/auc_per_gene_lo"] for c in r["curve"]],
                        [c["eval_forced/auc_per_gene_hi"] for c in r["curve"]], color=col, alpha=0.1)
        a2.plot(q, [c.get("eval_forced/teacher_agreement_per_gene") for c in r["curve"]], "o-", color=col)
    t = next((c.get("eval_forced/teacher_auc_per_gene") for r in runs for c in r.get("curve") or []
              if c.get("eval_forced/teacher_auc_per_gene")), None)
    if t:
        a1.axhline(t, color="k", lw=0.8, ls=":", label=f"teacher {t:.3f}")
    a1.axhline(0.5, color="grey", lw=0.8, ls="--")
    a1.set_xlabel("questions trained")
    a1.set_ylabel(f"auc_per_gene (K562 {'validation' if split == 'val' else split} genes, 95% CI)")
    a1.legend(fontsize=7)
    a2.set_xlabel("questions trained")
    a2.set_ylabel("within-gene Spearman with the teacher's table")
    fig.suptitle("Student per-gene AUROC and agreement with its teacher against exposure", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="runs/assets/wm_go64",
                    help="the teacher: a world model directory never trained on K562, or lookup:NAME for a lookup over "
                    "the other lines (e.g. lookup:pair_other_else_a_rate, the retrieval teacher)")
    ap.add_argument("--arms", default="base,teacher,centred,permuted")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--split", default="val")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-genes", type=int, default=96)
    ap.add_argument("--center", choices=["gene", "gene_rank"], default="gene_rank",
                    help="how the centred and permuted arms centre the teacher per target gene")
    ap.add_argument("--pool", choices=["split", "eval_genes"], default="split",
                    help="split: every pair of --split; eval_genes: only the evaluated genes' pairs")
    ap.add_argument("--train-split", default=None,
                    help="the inductive setting: train on the teacher's p over this split's pairs of the evaluated "
                    "genes (e.g. train, with --split test: the evaluated knockdowns never appear in training); "
                    "default: --split itself (transductive)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--train-layers", type=int, default=6)
    ap.add_argument("--set", action="append", default=[], help="extra train overrides for every arm")
    ap.add_argument("--out-dir", default="runs/distil")
    ap.add_argument("--name", default="distil_pergene")
    args = ap.parse_args()
    os.environ.setdefault("SOFTVERIFY_DATA_MIRROR", str(SHARED_PERTURBQA))
    arms = [a for a in args.arms.split(",") if a]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise SystemExit(f"unknown arms {bad}; expected some of {list(ARMS)}")
    if args.train_split and args.train_split != args.split and args.pool != "eval_genes":
        raise SystemExit(f"--train-split {args.train_split} needs --pool eval_genes (its pool is the evaluated genes' "
                         "pairs in that split)")
    out = Path(args.out_dir)
    tables = build_tables(args.teacher, out / "tables", args.split, args.eval_genes if args.pool == "eval_genes" else None,
                          args.center, args.train_split)
    result_path = Path(f"benchmarks/results/{args.name}.json")
    runs = json.loads(result_path.read_text())["runs"] if result_path.is_file() else []
    done = {(r["arm"], r["seed"]) for r in runs}
    seeds = [int(s) for s in args.seeds.split(",")]
    order = [("base", None)] if "base" in arms else []
    order += [(arm, seed) for seed in seeds for arm in arms if arm != "base"]  # seeds outer: partial results balanced
    for arm, seed in order:
        if (arm, seed) in done:
            continue
        r = eval_base(args) if arm == "base" else train_arm(arm, tables[arm], seed, args,
                                                             out / f"{arm}_s{seed}")
        runs.append(r)
        f = r["final"]
        print(f"{arm} seed {seed}: auc_per_gene {f['auc_per_gene']:.3f} [{f['auc_per_gene_lo']:.3f}, "
              f"{f['auc_per_gene_hi']:.3f}] pooled {f['auroc']:.3f}", flush=True)
        write_result(args.name, {"machine": machine(), "args": vars(args), "runs": runs,
                                 "summary": summarise(runs)})
    plot(runs, result_path.with_suffix(".png"), args.split)
    if any(len(r.get("curve") or []) > 2 for r in runs):
        plot_curves(runs, result_path.with_name(result_path.stem + "_curve.png"), args.split)
    print(json.dumps(summarise(runs), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
