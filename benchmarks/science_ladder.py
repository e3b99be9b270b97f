"""Science ladder: what each verifier family teaches SmolLM2-135M about K562 knockdowns.

Rungs (each a real GRPO run with softverify's Trainer on a local Ray, same budget, same
seed, same hyper-parameters; only the verifiers differ):

  base         no training: SmolLM2-135M-Instruct as shipped
  hard         the experimental PerturbQA label (hard verifier)
  world_model  the soft verifier: a world model trained ONLY on RPE1 + HepG2 (never K562);
               its probability of differential expression is the reward
  knowledge    GO knowledge verifiers (ROUGE against the genes' GO terms, GO keyword hits)
  composed     all of them, normalised per verifier then summed (GDPO)

Every trained rung also carries the format verifier at weight 0.25: SmolLM2-135M almost
never writes ``<answer>`` tags on its own, and without any answered completion in a group
the answer-checking verifiers abstain and the group has no signal.

Training: K562 upstream *train* split (balanced yes/no), 4 prompts x 4 completions per step,
``--max-new-tokens`` per completion, lr ``--lr``, a wall-clock budget per run
(``--minutes``, the issue's "about one hour"; ``trainer.time_budget_minutes``), periodic eval
on ``--periodic-eval-size`` held-out questions every ``--eval-every`` steps (the MCC-vs-step
curves). Final eval: ``--eval-size`` balanced questions of the K562 *test* split (perturbations
never seen in training), greedy, reported twice (see ``softverify/platform/eval_run.py``):
free (no tag = wrong) and forced (unanswered turns closed, yes/no by likelihood). The world
model's own metrics on the same questions sit beside them: how much of the verifier's
knowledge reached the policy.

Assets (GeneKB, GO-SVD embedding, the LOCO world model) are built from the gene files if
missing under ``--assets``. Finished rungs are reused (``--fresh`` re-runs them), so an
interrupted ladder continues where it stopped.

    SOFTVERIFY_DATA_MIRROR=../shared/data/perturbqa python benchmarks/science_ladder.py \\
        --gene-data ../shared/data/genes              # defaults: 60 min per rung, 512 questions
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

FORMAT = {"kind": "format", "weight": 0.25}


def rung_verifiers(assets: Path) -> dict[str, list[dict] | None]:
    kb, wm = str(assets / "kb"), str(assets / "wm_go64")
    go_rouge = {"kind": "go_rouge", "weight": 0.25, "params": {"kb_dir": kb, "variant": "mean", "measure": "fmeasure"}}
    go_kw = {"kind": "go_keywords", "weight": 0.25, "params": {"kb_dir": kb, "target": 5}}
    return {
        "base": None,
        "hard": [{"kind": "hard"}, FORMAT],
        "world_model": [{"kind": "world_model", "params": {"model_dir": wm}}, FORMAT],
        "knowledge": [dict(go_rouge, weight=1.0), dict(go_kw, weight=0.5), FORMAT],
        "composed": [{"kind": "hard"}, {"kind": "world_model", "weight": 0.5, "params": {"model_dir": wm}},
                     go_rouge, go_kw, FORMAT],
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


def world_model_metrics(wm_dir: Path, rows) -> dict:
    """The soft verifier's own answers to the eval questions (no embedding = unanswered)."""
    import math

    from softverify.bio.worldmodel import WorldModel
    from softverify.platform.evaluate import classification_metrics

    wm = WorldModel.load(wm_dir)
    p = wm.predict_proba(list(rows["pert"]), list(rows["gene"]))
    answers = [None if math.isnan(x) else int(x >= wm.threshold) for x in p]
    m = classification_metrics(list(rows["label"]), answers)
    m["coverage"] = 1.0 - m["unanswered_rate"]
    m["threshold"] = wm.threshold
    return m


def train_config(name: str, verifiers: list[dict], args, out: Path):
    from softverify.config import build_config

    w, r = (int(x) for x in args.layout.split("x"))
    raw = {
        "model": {"path": "smollm2"},
        "data": {"source": "perturbqa", "cell_lines": ["k562"], "split": "train", "eval_split": "test",
                 "eval_size": args.periodic_eval_size, "mirror": args.data_mirror, "seed": args.seed},
        "rollout": {"num_workers": w, "prompts_per_step": 4, "group_size": 4, "max_new_tokens": args.max_new_tokens,
                    "batch_size": 16},
        "learner": {"num_ranks": r, "micro_batch_size": 4, "lr": args.lr},
        "reward": {"aggregation": "normalize_then_sum" if name == "composed" else "sum_then_normalize"},
        "trainer": {"steps": args.max_steps, "time_budget_minutes": args.minutes, "eval_every": args.eval_every,
                    "checkpoint_every": 0, "output_dir": str(out), "seed": args.seed, "progress": True},
        "verifiers": verifiers,
    }
    return build_config(raw, [])


def final_eval(model: str, rows, args) -> dict:
    import torch

    from softverify.engines.hf import HFEngine
    from softverify.models import resolve_model_path
    from softverify.config import build_config
    from softverify.platform.eval_run import run_eval

    engine = HFEngine(resolve_model_path(model), "float32", torch_threads=args.eval_threads or torch.get_num_threads(),
                      batch_size=32, decode="loop")
    t0 = time.time()
    res = run_eval(engine, rows, max_new_tokens=args.max_new_tokens, stop=["</answer>"],
                   assistant_prefix=build_config({}, []).rollout.assistant_prefix, batch_size=32)
    return {"free": res.metrics, "forced": res.forced_metrics, "eval_s": time.time() - t0, "records": res.records}


def curve(metrics_jsonl: Path) -> list[dict]:
    rows = [json.loads(l) for l in metrics_jsonl.read_text().splitlines() if l.strip()]
    return [{"step": r["step"], "mcc": r["eval/mcc"], "forced_mcc": r.get("eval_forced/mcc"),
             "unanswered": r["eval/unanswered_rate"], "reward_mean": r.get("reward_mean")}
            for r in rows if "eval/mcc" in r]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "forced_mcc", "eval MCC, forced reading"), (axes[1], "mcc", "eval MCC, free reading")):
        base0 = result["runs"].get("base", {}).get("periodic", {}).get(key)
        for name, run in result["runs"].items():
            pts = [(0, base0)] if base0 is not None else []
            pts += [(c["step"], c[key]) for c in run.get("curve", []) if c.get(key) is not None]
            if name != "base" and pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=name)
        if base0 is not None:
            ax.axhline(base0, color="grey", ls="--", lw=1, label="base")
        ax.axhline(result["world_model"]["mcc"], color="black", ls=":", lw=1, label="world model (own, final set)")
        ax.set_title(f"{title} ({result['settings']['periodic_eval_size']} K562 test questions)", fontsize=9)
        ax.set_xlabel("GRPO step")
        ax.set_ylabel("MCC")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(result: dict) -> str:
    cols = ["tpr", "tnr", "f1", "mcc", "balanced_accuracy", "unanswered_rate"]
    head = "| run | steps | reading | " + " | ".join(cols) + " |\n|---|---|---|" + "---|" * len(cols)
    lines = [head]
    for name, run in result["runs"].items():
        for reading in ("free", "forced"):
            m = run["final"].get(reading)
            if m:
                lines.append(f"| {name} | {run.get('steps', 0)} | {reading} | "
                             + " | ".join(f"{m[c]:.3f}" for c in cols) + " |")
    wm = result["world_model"]
    lines.append("| world model (RPE1+HepG2, own) | - | - | " + " | ".join(f"{wm[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="base,hard,world_model,knowledge,composed")
    ap.add_argument("--data-mirror", default=os.environ.get("SOFTVERIFY_DATA_MIRROR") or
                    (str(SHARED_PERTURBQA) if SHARED_PERTURBQA.is_dir() else None))
    ap.add_argument("--gene-data", type=Path, help="folder with gene_info, gene2go, go-basic.obo (to build assets)")
    ap.add_argument("--assets", type=Path, default=REPO / "runs" / "assets")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "science_ladder", help="run directories")
    ap.add_argument("--minutes", type=float, default=60.0, help="training wall-clock budget per rung")
    ap.add_argument("--max-steps", type=int, default=10_000, help="step cap per rung (the budget usually ends first)")
    ap.add_argument("--eval-size", type=int, default=512, help="final eval questions (balanced, K562 test)")
    ap.add_argument("--periodic-eval-size", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--layout", default="2x2", help="rollout workers x learner ranks")
    ap.add_argument("--eval-threads", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="re-run rungs that already finished")
    ap.add_argument("--out", default="science_ladder")
    args = ap.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from softverify.config import DataConfig
    from softverify.data import load_prompts
    from softverify.platform.checkpoint import write_text_atomic
    from softverify.platform.trainer import Trainer

    if not args.data_mirror:
        print("note: no --data-mirror / SOFTVERIFY_DATA_MIRROR: PerturbQA is downloaded", file=sys.stderr)
    build_assets(args.assets, args.gene_data, args.data_mirror or "")
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    verifiers = rung_verifiers(args.assets)
    bad = [n for n in names if n not in verifiers]
    if bad:
        raise SystemExit(f"unknown rung(s) {bad}; expected some of {list(verifiers)}")

    rows = load_prompts(DataConfig(mirror=args.data_mirror, seed=args.seed), "test", args.eval_size)
    periodic = load_prompts(DataConfig(mirror=args.data_mirror, seed=args.seed, eval_size=args.periodic_eval_size),
                            "test", args.periodic_eval_size)
    print(f"eval: {len(rows)} K562 test questions ({sum(rows['label'])} yes), periodic: {len(periodic)}", flush=True)
    result = {"machine": machine(), "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "world_model": world_model_metrics(args.assets / "wm_go64", rows), "runs": {}}
    args.work.mkdir(parents=True, exist_ok=True)
    for name in names:
        done = args.work / f"{name}.json"
        if done.is_file() and not args.fresh:
            print(f"[{name}] reusing {done}", flush=True)
            result["runs"][name] = json.loads(done.read_text())
            continue
        t0 = time.time()
        run: dict = {"verifiers": verifiers[name]}
        if name == "base":
            fe = final_eval("smollm2", periodic, args)
            run["periodic"] = {"mcc": fe["free"]["mcc"], "forced_mcc": fe["forced"]["mcc"]}
            model = "smollm2"
        else:
            out = args.work / name
            if out.exists():
                import shutil

                shutil.rmtree(out)
            tr = Trainer(train_config(name, verifiers[name], args, out))
            try:
                model = str(tr.fit())
            finally:
                tr.shutdown()
                import ray

                ray.shutdown()  # the next rung starts a local Ray sized for its own actors
            run["curve"] = curve(out / "metrics.jsonl")
            run["steps"] = tr.step
            run["train_s"] = time.time() - t0
        fe = final_eval(model, rows, args)
        run["final"] = {"free": fe["free"], "forced": fe["forced"], "eval_s": fe["eval_s"]}
        write_text_atomic(args.work / f"{name}.completions.jsonl", "".join(json.dumps(r) + "\n" for r in fe["records"]))
        run["wall_s"] = time.time() - t0
        write_text_atomic(done, json.dumps(run, indent=2, default=float))
        result["runs"][name] = run
        print(f"[{name}] steps={run.get('steps', 0)} free MCC={fe['free']['mcc']:.3f} "
              f"forced MCC={fe['forced']['mcc']:.3f} unanswered={fe['free']['unanswered_rate']:.3f} "
              f"({run['wall_s']:.0f} s)", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / f"{args.out}.json", json.dumps(result, indent=2, default=float))
    plot(result, RESULTS / f"{args.out}.png")
    print(table(result))
    print(f"wrote {RESULTS / (args.out + '.json')} and .png", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
