"""Exposure per hour: how many direct-style questions the learner trains on and the eval scores, with and
without the shared prefix, against the machine's own measured matmul peak.

Three measurements, each A/B in one run (``off`` = the shared prefix disabled, ``on`` = the shipped path),
alternating off/on ``--reps`` times so drift in a shared box hits both sides:

* ``peak``: fp32 (and bf16) ``torch.mm`` GFLOP/s at ``--threads`` threads, the hardware limit each figure is
  put against;
* ``learner``: one direct-style enumerated learner step on the real SmolLM2-135M (``--prompts`` real
  K562 validation questions x the {yes, no} candidates, top ``--train-layers`` trained, forward +
  backward of the enumerated mode's ``micro_loss`` (:mod:`softverify.algo.enumerate_direct`) exactly as a rank runs it, without
  DeepSpeed): seconds, questions per hour, and the dense-equivalent FLOP rate's share of the peak (the
  FLOPs the step would cost with every prompt encoded in full, over its time: the shared prefix does
  less work for the same result, so its share can pass what the hardware does);
* ``eval``: the periodic eval's forced reading (``softverify eval --score-only``'s path,
  :func:`softverify.evaluation.run.run_eval` with ``score_only``) over ``--eval-questions``
  questions of whole validation target genes: questions per second.

``--e2e-steps N`` adds an end-to-end ``softverify train`` run (the distillation recipe, a teacher
table, periodic per-gene evals on) and reports its questions per hour from its own metrics.

    SOFTVERIFY_DATA_MIRROR=../shared/data/perturbqa python benchmarks/exposure.py --out exposure
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, SHARED_PERTURBQA, machine, write_result  # noqa: E402


def matmul_peak(threads: int, dtype, n: int = 1536, reps: int = 5) -> float:
    """Best GFLOP/s of an ``n x n`` matmul at ``threads`` threads (the best of ``reps``: a peak)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def direct_config(args, extra: list[str] = ()):
    from softverify.config import build_config

    return build_config({}, [
        "prompt.style=direct", "algorithm.estimator=enumerate", f"learner.train_layers={args.train_layers}",
        f"rollout.prompts_per_step={args.prompts}", f"learner.micro_batch_size={2 * args.prompts}",
        f"data.mirror={os.environ.get('SOFTVERIFY_DATA_MIRROR', SHARED_PERTURBQA)}",
        f"data.eval_genes={args.eval_genes}", "data.eval_split=val", *extra])


def non_embedding_params(model) -> int:
    """Parameters a token's forward multiplies by (the tied embedding is a lookup on the way in,
    counted once for the output head)."""
    return sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n) + \
        model.get_input_embeddings().weight.numel()


def learner_bench(args, rows) -> dict:
    """Forward + backward of one enumerated direct-style micro-batch, shared prefix off vs on."""
    import torch

    from softverify.actors.rollout import RolloutCore
    from softverify.algo import mode_for
    from softverify.learner.rank import freeze_below_top_layers
    from softverify.model.loading import load_causal_lm
    from softverify.model.names import resolve_model_path

    torch.set_num_threads(args.threads)
    cfg = {s: direct_config(args, [f"learner.shared_prefix={s}"]) for s in ("false", "true")}
    path = resolve_model_path(cfg["true"].model.path)
    core = RolloutCore(path, cfg["true"].model, cfg["true"].rollout)
    ss = core.candidates(rows[: args.prompts], list(cfg["true"].algorithm.answer_candidates))
    model, tok = load_causal_lm(path)
    model.train()
    freeze_below_top_layers(model, args.train_layers)
    rewards = torch.tensor([float(i % 2) for i in range(len(ss))])  # any rewards: the cost does not depend on them
    tokens = sum(len(s.prompt_token_ids) for s in ss[::2])
    n_layers = model.config.num_hidden_layers
    P = non_embedding_params(model)
    # dense-equivalent work: one forward over each distinct prompt in full, backward (2x) through the
    # trained top layers only
    dense = 2 * P * tokens * (1 + 2 * args.train_layers / n_layers)
    times = {"false": [], "true": []}
    for rep in range(args.reps + 1):
        for side in ("false", "true"):
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            loss, _ = mode_for(cfg[side]).micro_loss(model, tok, ss, rewards, len(ss), len(ss))
            loss.backward()
            if rep:  # the first round warms both up
                times[side].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"prompts": args.prompts, "prompt_tokens_per_question": tokens / args.prompts,
            "step_s": times, "median_s": med,
            "questions_per_hour": {k: 3600 * args.prompts / v for k, v in med.items()},
            "speedup": med["false"] / med["true"], "dense_gflop_per_step": dense / 1e9,
            "dense_equivalent_gflops": {k: dense / v / 1e9 for k, v in med.items()}}


def eval_bench(args, rows) -> dict:
    """The forced reading over whole validation genes' questions, shared prefix off vs on."""
    import numpy as np
    import torch

    from softverify.engines.hf import HFEngine
    from softverify.model.names import resolve_model_path
    from softverify.evaluation.run import run_eval

    cfg = direct_config(args)
    rc = cfg.rollout
    eng = HFEngine(resolve_model_path(cfg.model.path), torch_threads=args.threads, batch_size=rc.batch_size)
    qs = rows[: args.eval_questions]
    times, margins = {False: [], True: []}, {}
    for rep in range(args.reps):
        for shared in (False, True):
            eng.shared_prefix = shared
            t = time.perf_counter()
            res = run_eval(eng, qs, max_new_tokens=rc.max_new_tokens, stop=rc.stop, assistant_prefix=rc.assistant_prefix,
                           batch_size=rc.batch_size, progress=False, system_prompt=rc.system_prompt, score_only=True)
            times[shared].append(time.perf_counter() - t)
            margins[shared] = np.array([r["margin"] for r in res.records])
    med = {k: statistics.median(v) for k, v in times.items()}
    torch.set_num_threads(args.threads)
    return {"questions": len(qs), "batch_size": rc.batch_size,
            "seconds": {"off": times[False], "on": times[True]},
            "questions_per_s": {"off": len(qs) / med[False], "on": len(qs) / med[True]},
            "speedup": med[False] / med[True],
            "max_abs_margin_diff": float(np.abs(margins[False] - margins[True]).max())}


def e2e_bench(args) -> dict:
    """A real ``softverify train`` run of the distillation recipe; questions per hour from its metrics."""
    out = Path(args.work_dir) / "e2e"
    table = Path(args.work_dir) / "retrieval_val.parquet"
    env = dict(os.environ, SOFTVERIFY_DATA_MIRROR=os.environ.get("SOFTVERIFY_DATA_MIRROR", str(SHARED_PERTURBQA)))
    if not table.is_file():
        subprocess.run(["softverify", "worldmodel", "table", "--lookup", "pair_other_else_a_rate", "--split", "val",
                        "--center", "gene_rank", "--out", str(table)], check=True, cwd=REPO, env=env,
                       stdout=subprocess.DEVNULL)
    ov = ["prompt.style=direct", "algorithm.estimator=enumerate", f"learner.train_layers={args.train_layers}",
          "data.split=val", "data.balance=false", "data.stratify_by=teacher", f"data.eval_genes={args.eval_genes}",
          f"rollout.prompts_per_step={args.prompts}", f"trainer.steps={args.e2e_steps}",
          f"trainer.eval_every={max(args.e2e_steps // 2, 1)}", "trainer.checkpoint_every=0", "trainer.progress=false",
          f"trainer.output_dir={out}",
          f"verifiers=[{{kind: world_model, name: teacher, params: {{p_table: {table}, threshold: 0.5}}}}]"]
    t = time.perf_counter()
    subprocess.run(["softverify", "train"] + [x for o in ov for x in ("--set", o)], check=True, cwd=REPO, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/step_s" in r]
    q = args.e2e_steps * args.prompts
    return {"steps": args.e2e_steps, "questions": q, "wall_s": wall, "questions_per_hour_end_to_end": 3600 * q / wall,
            "median_step_s": statistics.median(r["time/step_s"] for r in steps),
            "questions_per_hour_between_evals": 3600 * args.prompts / statistics.median(r["time/step_s"] for r in steps),
            "evals": sum("eval_forced/auc_per_gene" in r for r in rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16, help="questions per learner step")
    ap.add_argument("--train-layers", type=int, default=6)
    ap.add_argument("--eval-genes", type=int, default=64)
    ap.add_argument("--eval-questions", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--e2e-steps", type=int, default=0, help="also run softverify train for this many steps")
    ap.add_argument("--work-dir", default="runs/exposure")
    ap.add_argument("--out", default="exposure")
    args = ap.parse_args()
    os.environ.setdefault("SOFTVERIFY_DATA_MIRROR", str(SHARED_PERTURBQA))
    import torch

    from softverify.data import load_eval_prompts

    rows = list(load_eval_prompts(direct_config(args).data))
    res = {"machine": machine(), "args": vars(args),
           "peak_gflops": {"float32": matmul_peak(args.threads, torch.float32),
                           "bfloat16": matmul_peak(args.threads, torch.bfloat16)}}
    print(f"matmul peak at {args.threads} threads: fp32 {res['peak_gflops']['float32']:.0f} GFLOP/s, "
          f"bf16 {res['peak_gflops']['bfloat16']:.0f}", flush=True)
    res["learner"] = lr = learner_bench(args, rows)
    peak = res["peak_gflops"]["float32"]
    print(f"learner step ({args.prompts} questions, {lr['prompt_tokens_per_question']:.0f} prompt tokens each): "
          f"off {lr['median_s']['false']:.2f} s, on {lr['median_s']['true']:.2f} s, speedup {lr['speedup']:.2f}x; "
          f"{lr['questions_per_hour']['true']:.0f} questions/h; dense-equivalent {lr['dense_equivalent_gflops']['true']:.0f} GFLOP/s "
          f"= {lr['dense_equivalent_gflops']['true'] / peak:.0%} of the fp32 peak (off: "
          f"{lr['dense_equivalent_gflops']['false'] / peak:.0%})", flush=True)
    res["eval"] = ev = eval_bench(args, rows)
    print(f"eval ({ev['questions']} questions): off {ev['questions_per_s']['off']:.1f} q/s, on "
          f"{ev['questions_per_s']['on']:.1f} q/s, speedup {ev['speedup']:.2f}x (max |margin diff| "
          f"{ev['max_abs_margin_diff']:.1e})", flush=True)
    if args.e2e_steps:
        res["e2e"] = e2 = e2e_bench(args)
        print(f"end to end ({e2['steps']} steps, {e2['evals']} per-gene evals): {e2['questions_per_hour_end_to_end']:.0f} "
              f"questions/h; {e2['questions_per_hour_between_evals']:.0f} between evals", flush=True)
    print(f"wrote {write_result(args.out, res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
