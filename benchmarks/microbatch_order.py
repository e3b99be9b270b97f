"""Padding waste in the learner: micro-batch order contiguous vs length vs fewest_tokens.

One real CoT batch (SmolLM2-135M-Instruct, real rbio1 prompts, the CoT prefix, sampled
completions of up to ``--new-tokens``), then the same Learner (one rank, no Ray) trains on
it under each ``learner.micro_batch_order``, interleaved, ``--reps`` times. Reported per
order: learn seconds (median), the ratio against contiguous measured in the same run,
tokens the forward passes process (padding included) vs those that are not padding. (That the
split leaves the loss and gradient unchanged is tests/learning/test_microbatch.py's job; here
each order trains the weights the previous run left, at lr 1e-9.)

    python benchmarks/microbatch_order.py                       # 4 x 4 completions, 128 tokens
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, rbio_rows, write_result  # noqa: E402

ORDERS = ("contiguous", "length", "fewest_tokens")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--micro-batch", type=int, default=4, help="learner.micro_batch_size")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="microbatch_order")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from softverify.infra.cluster import free_port
    from softverify.config import build_config
    from softverify.engines.base import SamplingParams, render_rows
    from softverify.engines.hf import HFEngine
    from softverify.learner.rank import LearnBatch, Learner
    from softverify.model.names import resolve_model_path
    from softverify.task.prompts import STYLE_DEFAULTS
    from softverify.types import Sample

    path = resolve_model_path("smollm2")
    cot = STYLE_DEFAULTS["cot"]
    rows = rbio_rows(args.prompts)
    engine = HFEngine(path, "float32", batch_size=args.prompts * args.group, device="cpu", decode="loop")
    pb = render_rows(engine, rows, cot["system_prompt"], cot["assistant_prefix"])
    t = time.perf_counter()
    gens = engine.generate(pb.token_ids, SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, seed=0,
                                                        stop=["</answer>"]), n=args.group)
    gen_s = time.perf_counter() - t
    samples = [Sample(prompt_id=str(i), prompt=pb.texts[i], completion=g.text, prompt_token_ids=pb.token_ids[i],
                      completion_token_ids=list(g.token_ids), behaviour_logprobs=list(g.logprobs))
               for i, gs in enumerate(gens) for g in gs]
    del engine
    lengths = np.array([len(s.completion_token_ids) for s in samples], dtype=np.float64)
    adv = (lengths - lengths.mean()) / (lengths.std() + 1e-6)  # a real spread of advantages
    n_tok = int(lengths.sum())
    print(f"generated {len(samples)} completions in {gen_s:.0f} s; lengths {sorted(lengths.astype(int).tolist())}",
          flush=True)

    base = build_config({}, ["prompt.style=cot", "algorithm.estimator=sample", "learner.num_ranks=1",
                             f"learner.micro_batch_size={args.micro_batch}", "learner.train_layers=null",
                             "learner.lr=1e-9", f"learner.torch_threads={args.threads}",
                             f"rollout.prompts_per_step={args.prompts}", f"rollout.group_size={args.group}",
                             "algorithm.dynamic_sampling=none"])
    learner = Learner(base, path, master_port=free_port())
    runs: dict[str, list[dict]] = {o: [] for o in ORDERS}
    for rep in range(args.reps + 1):  # rep 0 warms up
        for order in ORDERS:
            learner.cfg = base.model_copy(update={"learner": base.learner.model_copy(
                update={"micro_batch_order": order})})
            t = time.perf_counter()
            m = learner.train_step(LearnBatch(samples, adv, n_tok, len(samples)))
            s = time.perf_counter() - t
            if rep:
                runs[order].append({"learn_s": s, "pg_loss": m["pg_loss_sum"], "encoded": m["learn_encoded_tokens_sum"],
                                    "real": m["learn_real_tokens_sum"]})
                print(f"rep {rep} {order:<14} {s:6.2f} s  encoded {m['learn_encoded_tokens_sum']:.0f} "
                      f"real {m['learn_real_tokens_sum']:.0f}", flush=True)
    summary = {}
    ref = statistics.median(r["learn_s"] for r in runs["contiguous"])
    for order, rs in runs.items():
        med = statistics.median(r["learn_s"] for r in rs)
        summary[order] = {"learn_s_median": med, "speedup_vs_contiguous": ref / med,
                          "encoded_tokens": rs[0]["encoded"], "real_tokens": rs[0]["real"],
                          "pad_frac": 1 - rs[0]["real"] / rs[0]["encoded"], "pg_loss": rs[0]["pg_loss"]}
    print(f"\n{'order':<16}{'learn s':>9}{'vs contiguous':>15}{'encoded':>9}{'pad frac':>10}{'pg_loss':>12}")
    for order, s in summary.items():
        print(f"{order:<16}{s['learn_s_median']:9.2f}{s['speedup_vs_contiguous']:15.2f}{s['encoded_tokens']:9.0f}"
              f"{s['pad_frac']:10.3f}{s['pg_loss']:12.6f}")
    out = {"benchmark": "microbatch_order", "args": vars(args), "machine": machine(), "generate_s": gen_s,
           "completion_lengths": lengths.astype(int).tolist(), "runs": runs, "summary": summary}
    print("wrote", write_result(args.out, out))
    return out


if __name__ == "__main__":
    main()
