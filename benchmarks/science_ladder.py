"""Science ladder: what each verifier family teaches SmolLM2-135M about K562 knockdowns.

Rungs (each a real GRPO run with softverify's Trainer on a local Ray, the same budget, seed
and hyper-parameters; only the verifiers differ), all in the direct prompt style unless named:

  base              no training: SmolLM2-135M-Instruct as shipped
  hard              the experimental PerturbQA label (hard verifier)
  world_model       the soft verifier: a world model trained ONLY on RPE1 + HepG2 (never
                    K562), its p the reward, threshold 'median' over the training prompts,
                    each step's prompts half of its yes and half of its no decisions
                    (data.stratify_by)
  world_model_unstratified  the same without stratified steps (collapsed onto "yes")
  hard_world_model  both, summed
  composed          hard + world model, normalised per verifier then summed (GDPO)
  knowledge         GO knowledge verifiers (ROUGE against GO terms, keyword hits); CoT only:
                    a direct answer states no gene facts for them to judge. No answer forcing:
                    its rewards read the reasoning only, so forced answers would be trained on
                    advantages unrelated to them (the eval forces its own reading anyway)
  shuffled          control: the world model's rewards permuted across genes (each question
                    keeps a consistent reward drawn from the same p distribution, unrelated to
                    its genes); must stay near chance
  supervised        ceiling: cross-entropy on the answer token against the world model's
                    decisions (``supervised_ceiling.py``), same questions, layers, lr, budget
  cot               the world-model recipe in the CoT style (reasoning, then the answer) with
                    answer forcing (rollout.force_answer): a turn left unanswered after
                    --cot-max-new-tokens of reasoning gets '</think>' '<answer>' appended and its
                    answer sampled, so every completion carries an answer the verifier can pay
                    for; the inserted tokens are not trained, the format verifier judges the
                    text before forcing. answer_loss_share 0.5 gives the answer span half the loss.
                    Its system prompt is prompts.COT_ANSWER_PROMPT (concrete inline answers: the
                    rbio1 prompt's 'yes or no' example is copied after a forced <answer>;
                    benchmarks/cot_forced_parse.py)
  cot_enumerate     the best direct recipe carried to CoT: --cot-group reasonings sampled per
                    prompt, each closed for its answer and followed by both answers; the answer
                    takes the exact expected gradient given its reasoning (with the direct rungs'
                    answer-set entropy bonus --entropy-coef), the reasoning a policy gradient whose
                    advantage is its exact E_q[r] against its group (algorithm.estimator=enumerate)

Every RL rung also carries the format verifier at weight 0.25.

Training: K562 upstream *train* split (balanced yes/no), ``--prompts`` prompts x ``--group``
completions per step, top ``--train-layers`` layers, lr ``--lr``, dynamic sampling (filter), a
wall-clock budget per run (``--minutes``), periodic eval on ``--periodic-eval-size`` held-out
questions every ``--eval-every`` steps. Final eval: ``--eval-size`` balanced questions of the
K562 *test* split (perturbations never seen in training), greedy, read twice (free / forced;
see ``softverify/evaluation/run.py``), with the forced score's AUROC/AUPRC and bootstrap
95% intervals, its Spearman correlation with the world model's p, and the world model's own
metrics on the same questions: how much of the verifier's knowledge reached the policy.

Assets (GeneKB, GO-SVD embedding, the LOCO world model) are built from the gene files if
missing under ``--assets``. Finished rungs are reused (``--fresh`` re-runs them), so a ladder
can span several sittings.

    SOFTVERIFY_DATA_MIRROR=../shared/data/perturbqa python benchmarks/science_ladder.py \\
        --gene-data ../shared/data/genes --minutes 30
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, SHARED_PERTURBQA, machine  # noqa: E402

from supervised_ceiling import run_supervised  # noqa: E402

from softverify.task.prompts import COT_ANSWER_PROMPT  # noqa: E402

FORMAT = {"kind": "format", "weight": 0.25}
SPECIAL = ("base", "supervised")


def rungs(assets: Path, threshold: str) -> dict[str, dict]:
    """Per rung: its verifiers and the config overrides that differ from the common ones."""
    kb, wm = str(assets / "kb"), str(assets / "wm_go64")
    soft = {"kind": "world_model", "params": {"model_dir": wm, "threshold": threshold}}
    go_rouge = {"kind": "go_rouge", "weight": 0.25, "params": {"kb_dir": kb, "variant": "mean", "measure": "fmeasure"}}
    go_kw = {"kind": "go_keywords", "weight": 0.25, "params": {"kb_dir": kb, "target": 5}}
    cot = {"prompt": {"style": "cot"}}
    strat = {"data": {"stratify_by": "world_model"}}  # each step half WM-yes, half WM-no prompts
    return {
        "base": {"verifiers": None},
        "hard": {"verifiers": [{"kind": "hard"}, FORMAT]},
        "world_model": {"verifiers": [soft, FORMAT], "over": strat},
        "world_model_unstratified": {"verifiers": [soft, FORMAT], "over": {"data": {"stratify_by": None}}},
        "hard_world_model": {"verifiers": [{"kind": "hard"}, soft, FORMAT], "over": strat},
        "composed": {"verifiers": [{"kind": "hard"}, soft, FORMAT],
                     "over": {"reward": {"aggregation": "normalize_then_sum"}, **strat}},
        "shuffled": {"verifiers": [{**soft, "params": {**soft["params"], "shuffle_seed": 1}}, FORMAT], "over": strat},
        "supervised": {"verifiers": None},
        "knowledge": {"verifiers": [dict(go_rouge, weight=1.0), dict(go_kw, weight=0.5), FORMAT], "over": cot},
        "cot": {"verifiers": [soft, FORMAT],
                "over": {**cot, **strat, "rollout": {"force_answer": True, "system_prompt": COT_ANSWER_PROMPT}}},
        "cot_enumerate": {"verifiers": [soft, FORMAT],
                          "over": {**cot, **strat, "rollout": {"system_prompt": COT_ANSWER_PROMPT},
                                   "algorithm": {"estimator": "enumerate"}}},
    }


def build_assets(assets: Path, gene_data: Path | None, mirror: str) -> None:
    """GeneKB, GO-SVD(64) gene embedding and the RPE1+HepG2 world model, via the CLI."""
    steps = []
    if not (assets / "kb").is_dir():
        if gene_data is None:
            raise SystemExit(f"{assets / 'kb'} is missing: pass --gene-data DIR (gene_info, gene2go, go-basic.obo)")
        g = gene_data
        steps.append(["genes", "build", "--gene-info", str(g / "Homo_sapiens.gene_info.gz"),
                      "--gene2go", str(g / "gene2go_human.gz"), "--obo", str(g / "go-basic.obo.gz"),
                      "--summaries", str(g / "gene_summaries_ncbi_uniprot.json"), "--out", str(assets / "kb")])
    if not (assets / "emb_go64").is_dir():
        steps.append(["embed", "genes", "--kind", "go", "--kb", str(assets / "kb"), "--cell-lines",
                      "k562,rpe1,hepg2", "--dim", "64", "--out", str(assets / "emb_go64")])
    if not (assets / "wm_go64").is_dir():
        steps.append(["worldmodel", "fit", "--embedding", str(assets / "emb_go64"), "--cell-lines", "rpe1,hepg2",
                      "--train-split", "all", "--eval-cell-line", "k562", "--eval-split", "test",
                      "--max-epochs", "6", "--out", str(assets / "wm_go64")])
    env = dict(os.environ, SOFTVERIFY_DATA_MIRROR=mirror)
    for s in steps:
        print("+ softverify", " ".join(s), flush=True)
        subprocess.run([sys.executable, "-m", "softverify.cli", *s], check=True, env=env, cwd=REPO)


def world_model_metrics(wm_dir: Path, rows) -> tuple[dict, list[float]]:
    """The soft verifier's own answers to the eval questions (no embedding = unanswered),
    its AUROC as a scorer, and its p per question."""
    import math

    import numpy as np

    from softverify.bio.worldmodel import WorldModel
    from softverify.evaluation.classification import classification_metrics
    from softverify.evaluation.scores import score_metrics

    wm = WorldModel.load(wm_dir)
    p = wm.predict_proba(list(rows["pert"]), list(rows["gene"]))
    answers = [None if math.isnan(x) else int(x >= wm.threshold) for x in p]
    m = classification_metrics(list(rows["label"]), answers)
    m["coverage"] = 1.0 - m["unanswered_rate"]
    m["threshold"] = wm.threshold
    ok = np.isfinite(p)
    sm = score_metrics(np.array(rows["label"])[ok], p[ok])
    m.update({k: sm[k] for k in ("auroc", "auroc_lo", "auroc_hi", "auprc")})
    return m, [float(x) for x in p]


def train_config(name: str, rung: dict, args, out: Path):
    from softverify.config import build_config

    w, r = (int(x) for x in args.layout.split("x"))
    raw = {
        "model": {"path": "smollm2"},
        "prompt": {"style": "direct"},
        "data": {"source": "perturbqa", "cell_lines": ["k562"], "split": "train", "eval_split": "test",
                 "eval_size": args.periodic_eval_size, "mirror": args.data_mirror, "seed": args.seed,
                 "max_prompts": None},
        "rollout": {"num_workers": w, "prompts_per_step": args.prompts, "group_size": args.group, "batch_size": 64},
        "learner": {"num_ranks": r, "micro_batch_size": args.micro_batch, "lr": args.lr,
                    "train_layers": args.train_layers, "lr_warmup_steps": 5},
        "algorithm": {"dynamic_sampling": "filter", "entropy_coef": args.entropy_coef, "kl_coef": args.kl_coef,
                      "advantage": args.advantage},
        "trainer": {"steps": args.max_steps, "time_budget_minutes": args.minutes, "eval_every": args.eval_every,
                    "checkpoint_every": 0, "output_dir": str(out), "seed": args.seed, "progress": True},
        "verifiers": rung["verifiers"],
    }
    for sec, vals in rung.get("over", {}).items():
        raw[sec] = {**raw.get(sec, {}), **vals}
    if raw["prompt"]["style"] == "direct":
        raw["algorithm"]["estimator"] = args.estimator
    if raw["prompt"]["style"] == "cot":
        raw["rollout"]["max_new_tokens"] = args.cot_max_new_tokens
        raw["rollout"]["group_size"] = args.cot_group or args.group
        raw["learner"]["micro_batch_size"] = 8
        if raw["algorithm"].get("estimator") != "enumerate":
            raw["algorithm"]["answer_loss_share"] = 0.5
            # the direct rungs' entropy bonus is the exact entropy over {yes, no}; in CoT it is every
            # reasoning token's entropy over the vocabulary, a different quantity: at 0.2 it drove the
            # token entropy from 2.6 to 6.5 nats in 13 steps and forced answers stopped parsing
            raw["algorithm"]["entropy_coef"] = args.cot_entropy_coef
        # CoT enumerate: the bonus is the exact entropy over the answer set, as in the direct rungs
    return build_config(raw, [])


def final_eval(model: str, rows, args, style: str = "direct", wm_p: list[float] | None = None) -> dict:
    import torch

    from softverify.config import build_config
    from softverify.engines.hf import HFEngine
    from softverify.model.names import resolve_model_path
    from softverify.evaluation.run import metrics_from_records, run_eval

    from softverify.task.prompts import load_trained_prompt

    rc = build_config({"prompt": {"style": style}}, []).rollout
    if style == "cot":
        rc.max_new_tokens = args.cot_max_new_tokens
    tp = load_trained_prompt(model) if Path(model).is_dir() else None
    if tp is not None:  # ask the policy the way it was trained (the cot rung's own system prompt)
        rc.system_prompt, rc.assistant_prefix, rc.stop = tp.system_prompt, tp.assistant_prefix, tp.stop
    engine = HFEngine(resolve_model_path(model), "float32", torch_threads=args.eval_threads or torch.get_num_threads(),
                      batch_size=32, decode="loop")
    t0 = time.time()
    res = run_eval(engine, rows, max_new_tokens=rc.max_new_tokens, stop=rc.stop, assistant_prefix=rc.assistant_prefix,
                   batch_size=32, system_prompt=rc.system_prompt)
    if wm_p is not None:
        for rec, p in zip(res.records, wm_p):
            rec["wm_p"] = p
    free, forced = metrics_from_records(res.records)
    return {"free": free, "forced": forced, "eval_s": time.time() - t0, "records": res.records}


def curve(metrics_jsonl: Path) -> list[dict]:
    rows = [json.loads(l) for l in metrics_jsonl.read_text().splitlines() if l.strip()]
    seen = 0
    out = []
    for r in rows:
        seen = r.get("questions_trained_total", seen)
        if "eval/mcc" in r:
            out.append({"step": r["step"], "questions": seen, "mcc": r["eval/mcc"],
                        "forced_mcc": r.get("eval_forced/mcc"), "auroc": r.get("eval_forced/auroc"),
                        "auroc_lo": r.get("eval_forced/auroc_lo"), "auroc_hi": r.get("eval_forced/auroc_hi"),
                        "unanswered": r["eval/unanswered_rate"], "reward_mean": r.get("reward_mean")})
    return out


def step_stats(metrics_jsonl: Path) -> dict:
    """Mean seconds per training step and, where answers were forced (rollout.force_answer),
    the mean share of forced completions and of those still unanswered after forcing."""
    import numpy as np

    rows = [json.loads(l) for l in metrics_jsonl.read_text().splitlines() if l.strip()]
    out = {}
    for key, name in (("time/step_s", "step_s_mean"), ("rollout/forced_frac", "forced_frac_mean"),
                      ("rollout/unanswered_frac", "unanswered_frac_mean")):
        vals = [r[key] for r in rows if r.get(key) is not None]
        if vals:
            out[name] = float(np.mean(vals))
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    base = result["runs"].get("base", {}).get("periodic", {})
    for ax, key, title, xkey in ((axes[0], "auroc", "forced-score AUROC", "step"),
                                 (axes[1], "auroc", "forced-score AUROC vs questions trained", "questions")):
        colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3)
        for name, run in result["runs"].items():
            if name == "base":
                continue
            color = next(colors)  # one colour per run: its curve, its band and its final eval
            label = name + (" (1 step = 32 questions)" if name == "supervised" and xkey == "step" else "")
            pts = [(c[xkey], c[key]) for c in run.get("curve", []) if c.get(key) is not None and c.get(xkey) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=label, color=color)
                band = [(c[xkey], c["auroc_lo"], c["auroc_hi"]) for c in run["curve"] if c.get("auroc_lo") is not None]
                if band:
                    ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], alpha=0.1,
                                    color=color)
            f = (run.get("final") or {}).get("forced") or {}
            x = run.get("steps" if xkey == "step" else "questions")
            if f.get("auroc") is not None and x:  # the final eval (512), with its interval
                ax.errorbar([x], [f["auroc"]], yerr=[[f["auroc"] - f["auroc_lo"]], [f["auroc_hi"] - f["auroc"]]],
                            fmt="s", ms=5, capsize=3, color=color, label=f"{name} final ({f.get('n', '?')})")
        if base.get("auroc") is not None:
            ax.axhline(base["auroc"], color="grey", ls="--", lw=1, label="base")
        ax.axhline(0.5, color="grey", ls=":", lw=0.8)
        ax.axhline(result["world_model"]["auroc"], color="black", ls=":", lw=1, label="world model (own, final set)")
        ax.set_title(f"{title} ({result['settings']['periodic_eval_size']} K562 test questions, 95% CI)", fontsize=9)
        ax.set_xlabel("GRPO step" if xkey == "step" else "questions trained on")
        ax.set_xlim(left=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("AUROC")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(result: dict) -> str:
    wm = result["world_model"]
    head = ("| run | steps | questions | forced AUROC [95% CI] | AUPRC | forced MCC [95% CI] | MCC / WM MCC | "
            "Spearman vs WM p | free MCC | TPR | TNR | unanswered |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name, run in result["runs"].items():
        f, fr = run["final"].get("forced") or {}, run["final"]["free"]
        if not f:
            continue
        frac = f["mcc"] / wm["mcc"] if wm.get("mcc") else float("nan")
        lines.append(
            f"| {name} | {run.get('steps', 0)} | {run.get('questions', 0)} | {f['auroc']:.3f} "
            f"[{f['auroc_lo']:.3f}, {f['auroc_hi']:.3f}] | {f['auprc']:.3f} | {f['mcc']:.3f} "
            f"[{f.get('mcc_lo', float('nan')):.3f}, {f.get('mcc_hi', float('nan')):.3f}] | {frac:.2f} | "
            f"{f.get('spearman_ref', float('nan')):.3f} | {fr['mcc']:.3f} | {f['tpr']:.3f} | {f['tnr']:.3f} | "
            f"{fr['unanswered_rate']:.3f} |")
    lines.append(f"| world model (RPE1+HepG2, own) | - | - | {wm['auroc']:.3f} [{wm['auroc_lo']:.3f}, {wm['auroc_hi']:.3f}] "
                 f"| {wm['auprc']:.3f} | {wm['mcc']:.3f} | 1.00 | - | {wm['mcc']:.3f} | {wm['tpr']:.3f} | "
                 f"{wm['tnr']:.3f} | {wm['unanswered_rate']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="base,world_model,shuffled,hard,supervised,hard_world_model,composed,cot")
    ap.add_argument("--data-mirror", default=os.environ.get("SOFTVERIFY_DATA_MIRROR") or
                    (str(SHARED_PERTURBQA) if SHARED_PERTURBQA.is_dir() else None))
    ap.add_argument("--gene-data", type=Path, help="folder with gene_info, gene2go, go-basic.obo (to build assets)")
    ap.add_argument("--assets", type=Path, default=REPO / "runs" / "assets")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "science_ladder", help="run directories")
    ap.add_argument("--minutes", type=float, default=30.0, help="training wall-clock budget per rung")
    ap.add_argument("--max-steps", type=int, default=10_000, help="step cap per rung (the budget usually ends first)")
    ap.add_argument("--eval-size", type=int, default=512, help="final eval questions (balanced, K562 test)")
    ap.add_argument("--periodic-eval-size", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=15)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per GRPO step")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt")
    ap.add_argument("--micro-batch", type=int, default=64)
    ap.add_argument("--train-layers", type=int, default=6)
    ap.add_argument("--lr", type=float, default=6e-5)
    ap.add_argument("--entropy-coef", type=float, default=0.0)
    ap.add_argument("--kl-coef", type=float, default=0.0, help="KL to the base model (k3), all RL rungs")
    ap.add_argument("--estimator", default="sample", choices=["sample", "enumerate"],
                    help="direct-style rungs: sampled GRPO groups, or the exact expected gradient over yes/no")
    ap.add_argument("--advantage", default="grpo", choices=["grpo", "drgrpo"],
                    help="group advantage: std-normalised (grpo) or not (drgrpo)")
    ap.add_argument("--threshold", default="median", help="world-model threshold policy: balanced|median|model")
    ap.add_argument("--cot-max-new-tokens", type=int, default=64,
                    help="CoT rungs: reasoning budget per completion (the cot rung then forces the answer)")
    ap.add_argument("--cot-group", type=int, help="CoT rungs: sampled reasonings per prompt (default: --group)")
    ap.add_argument("--cot-entropy-coef", type=float, default=0.0,
                    help="CoT rungs: entropy bonus on the sampled tokens (default 0; --entropy-coef is the direct "
                         "rungs' bonus over the answer set)")
    ap.add_argument("--sup-batch", type=int, default=32, help="supervised ceiling: questions per optimiser step")
    ap.add_argument("--layout", default="2x2", help="rollout workers x learner ranks")
    ap.add_argument("--eval-threads", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="re-run rungs that already finished")
    ap.add_argument("--out", default="science_ladder")
    args = ap.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from softverify.config import DataConfig
    from softverify.data import load_prompts
    from softverify.platform.train.checkpoint import write_text_atomic
    from softverify.platform.train.trainer import Trainer

    if not args.data_mirror:
        print("note: no --data-mirror / SOFTVERIFY_DATA_MIRROR: PerturbQA is downloaded", file=sys.stderr)
    build_assets(args.assets, args.gene_data, args.data_mirror or "")
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    ladder = rungs(args.assets, args.threshold)
    bad = [n for n in names if n not in ladder]
    if bad:
        raise SystemExit(f"unknown rung(s) {bad}; expected some of {list(ladder)}")

    rows = load_prompts(DataConfig(mirror=args.data_mirror, seed=args.seed), "test", args.eval_size)
    periodic = load_prompts(DataConfig(mirror=args.data_mirror, seed=args.seed, eval_size=args.periodic_eval_size),
                            "test", args.periodic_eval_size)
    print(f"eval: {len(rows)} K562 test questions ({sum(rows['label'])} yes), periodic: {len(periodic)}", flush=True)
    wm_own, wm_p = world_model_metrics(args.assets / "wm_go64", rows)
    result = {"machine": machine(), "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "world_model": wm_own, "runs": {}}
    args.work.mkdir(parents=True, exist_ok=True)
    for name in names:
        done = args.work / f"{name}.json"
        if done.is_file() and not args.fresh:
            print(f"[{name}] reusing {done}", flush=True)
            result["runs"][name] = json.loads(done.read_text())
            continue
        t0 = time.time()
        rung = ladder[name]
        run: dict = {"verifiers": rung["verifiers"], "over": rung.get("over", {})}
        style = rung.get("over", {}).get("prompt", {}).get("style", "direct")
        if name == "base":
            fe = final_eval("smollm2", periodic, args)
            run["periodic"] = {"mcc": fe["free"]["mcc"], "forced_mcc": fe["forced"]["mcc"], "auroc": fe["forced"]["auroc"]}
            model = "smollm2"
        elif name == "supervised":
            sup = run_supervised(wm_dir=args.assets / "wm_go64", threshold_policy=args.threshold,
                                 data_mirror=args.data_mirror, seed=args.seed, minutes=args.minutes, lr=args.lr,
                                 batch_size=args.sup_batch, train_layers=args.train_layers, periodic_rows=periodic,
                                 eval_every_questions=args.eval_every * args.prompts, out=args.work / name)
            model = sup.pop("final_dir")
            run.update(sup)
        else:
            out = args.work / name
            if out.exists():
                import shutil

                shutil.rmtree(out)
            cfg = train_config(name, rung, args, out)
            tr = Trainer(cfg)
            try:
                model = str(tr.fit())
            finally:
                tr.shutdown()
                import ray

                ray.shutdown()  # the next rung starts a local Ray sized for its own actors
            run["curve"] = curve(out / "metrics.jsonl")
            run.update(step_stats(out / "metrics.jsonl"))
            run["steps"] = tr.step
            run["questions"] = tr.questions_trained
            run["thresholds"] = tr.thresholds_chosen
            run["train_s"] = time.time() - t0
        fe = final_eval(model, rows, args, style, wm_p)
        run["final"] = {"free": fe["free"], "forced": fe["forced"], "eval_s": fe["eval_s"]}
        write_text_atomic(args.work / f"{name}.completions.jsonl", "".join(json.dumps(r) + "\n" for r in fe["records"]))
        run["wall_s"] = time.time() - t0
        write_text_atomic(done, json.dumps(run, indent=2, default=float))
        result["runs"][name] = run
        f = fe["forced"]
        print(f"[{name}] steps={run.get('steps', 0)} forced AUROC={f['auroc']:.3f} [{f['auroc_lo']:.3f}, "
              f"{f['auroc_hi']:.3f}] forced MCC={f['mcc']:.3f} free MCC={fe['free']['mcc']:.3f} "
              f"unanswered={fe['free']['unanswered_rate']:.3f} ({run['wall_s']:.0f} s"
              + (f", {run['step_s_mean']:.1f} s/step" if "step_s_mean" in run else "")
              + (f", forced_frac={run['forced_frac_mean']:.3f}" if "forced_frac_mean" in run else "") + ")", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / f"{args.out}.json", json.dumps(result, indent=2, default=float))
    plot(result, RESULTS / f"{args.out}.png")
    print(table(result))
    print(f"wrote {RESULTS / (args.out + '.json')} and .png", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
