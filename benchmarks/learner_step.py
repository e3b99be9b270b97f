"""One learner step in isolation: Ray-free DeepSpeed ranks (one process each), SmolLM2-135M fp32, every weight.

The batch is what one rank of the 2 x 2 CoT step_vs_trl run trains on: 2 real rbio1 CoT
prompts (system prompt, chat template, "<think>\\n") x 4 completions of the lengths a
128-token CoT rollout gives (30-128 tokens). It prints the median seconds of ``--reps``
steps after a warm-up and the forward passes' token positions (``learn_encoded_tokens``,
padding included) against the real ones. Made for A/B runs of two commits with the same
script: the code under test is whatever ``softverify`` imports, so

    PYTHONPATH=/path/to/old/checkout python benchmarks/learner_step.py --out learner_step_old
    python benchmarks/learner_step.py --out learner_step_new

``--estimator enumerate`` runs the CoT-enumerate step instead: each of those completions is a
reasoning, followed by the forcing suffix and every answer candidate (2 x 4 x 2 rows), and the
result adds the reasoning ("head") positions the head pass processes padded to the longest
against packed back to back. ``--ranks 2`` runs the 2 x 2 step's whole learner (each rank its own 2 prompts x 4, the
gradient all-reduce between them); ``--set learner.zero_stage=1`` and the like compare
settings on one checkout.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, rbio_rows, write_result  # noqa: E402

LENGTHS = [128, 96, 60, 45, 128, 80, 50, 30]  # 2 prompts x 4 completions


def bench_config(world: int, enumerate_: bool, overrides: list[str]):
    """The config every rank trains with (``overrides`` last); the parent reads it too."""
    from softverify.config import build_config

    return build_config({}, [
        "prompt.style=cot", f"algorithm.estimator={'enumerate' if enumerate_ else 'sample'}",
        "algorithm.advantage=grpo", "algorithm.entropy_coef=0",
        "algorithm.kl_coef=0", "learner.train_layers=null", "learner.micro_batch_size=8",
        f"rollout.prompts_per_step={2 * world}", "rollout.group_size=4", f"learner.num_ranks={world}",
        "learner.zero_stage=0", "learner.lr=1e-6", "learner.lr_warmup_steps=0", "trainer.steps=100", *overrides])


def rank_step(rank: int, world: int, port: int, reps: int, overrides: list[str], enumerate_: bool, out) -> None:
    """One rank's warm-up + ``reps`` timed steps on its 2 prompts x 4 completions (with
    ``enumerate_``: 4 reasonings, each followed by the forcing suffix and every answer
    candidate); rank 0 puts (step seconds, metrics, prompt lengths) on ``out``. Every rank
    trains, as in the group."""
    import numpy as np
    import torch

    from softverify.learner.rank import LearnBatch, Learner
    from softverify.model.names import resolve_model_path
    from softverify.task.prompts import STYLE_DEFAULTS, chat_text, row_messages
    from softverify.types import Sample
    from softverify.task.answer import candidate_ids, forcing_suffix

    cfg = bench_config(world, enumerate_, overrides)
    from softverify.actors.learner_group import prepare_rank_memory
    from softverify.infra.procmem import minor_faults

    prepare_rank_memory(cfg.learner)  # as the rank's actor does, before anything is allocated
    learner = Learner(cfg, resolve_model_path(), rank=rank, world_size=world, master_port=port)
    tok, style = learner.tokenizer, STYLE_DEFAULTS["cot"]
    rows = rbio_rows(2 * world)[2 * rank: 2 * rank + 2]
    g = torch.Generator().manual_seed(rank)
    suffix = tok(forcing_suffix(style["assistant_prefix"]), add_special_tokens=False)["input_ids"]
    cands = candidate_ids(tok, cfg.algorithm.answer_candidates, cfg.rollout.stop[0]) if enumerate_ else [[]]
    samples = []
    for i, n in enumerate(LENGTHS):
        text = chat_text(tok, row_messages(rows[i // 4], style["system_prompt"]), style["assistant_prefix"])
        reasoning = torch.randint(100, 20000, (n,), generator=g).tolist()
        for cand in cands:  # sampled: the completion alone; enumerate: reasoning + forced suffix + candidate
            forced = suffix + cand if enumerate_ else []
            samples.append(Sample(prompt_id=f"{rank}.{i // 4}", prompt="", completion="",
                                  prompt_token_ids=tok(text, add_special_tokens=False)["input_ids"],
                                  completion_token_ids=reasoning + forced,
                                  behaviour_logprobs=[-9.0] * n + [0.0] * len(forced),
                                  forced_mask=[0] * n + [1] * len(forced)))
    rewards = [1.0, -1.0, 0.5, -0.5] * 2 if not enumerate_ else [1.0, 0.0, 0.0, 1.0] * (len(samples) // 4)
    batch = LearnBatch(samples, np.array(rewards), total_tokens=world * sum(LENGTHS), total_seqs=world * len(samples))
    times, faults, metrics = [], [], {}
    for _ in range(reps + 1):
        t, f = time.perf_counter(), minor_faults()
        metrics = learner.train_step(batch)
        times.append(time.perf_counter() - t)
        faults.append(minor_faults() - f)
    metrics["page_faults"] = faults
    if rank == 0:
        if enumerate_:
            from softverify.learner.microbatch import completion_rows
            from softverify.learner.seqbatch import enumerated_heads

            K = len(cands)
            heads = enumerated_heads(samples, K, [len(c) for c in cands])
            hl = [len(h) for h in heads]
            rows = completion_rows([c // 4 for c in range(len(heads))], hl)
            metrics["head_positions_padded"] = len(hl) * max(hl)
            metrics["head_positions_packed"] = len(rows) * max(sum(hl[c] for c in r) for r in rows)
            metrics["head_positions_real"] = sum(hl)
        out.put((times, metrics, [len(s.prompt_token_ids) for s in samples[::len(samples) // 2]]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--ranks", type=int, default=1, help="DeepSpeed ranks, one process each, each with its own "
                    "2 prompts x 4 (2 = the learner of the 2x2 step)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides, e.g. learner.zero_stage=1 learner.fused_optimizer=false")
    ap.add_argument("--estimator", choices=["sample", "enumerate"], default="sample",
                    help="enumerate: the CoT-enumerate step (each reasoning followed by every answer candidate)")
    ap.add_argument("--port", type=int, default=29611, help="the DeepSpeed world's master port")
    ap.add_argument("--out", default="learner_step")
    args = ap.parse_args(argv)
    import softverify

    from softverify.actors.learner_group import rank_options

    enum = args.estimator == "enumerate"
    # the environment a rank's actor starts with (learner.huge_page_alloc), inherited by the spawned ranks
    os.environ.update(rank_options(bench_config(args.ranks, enum, args.set).learner)
                      .get("runtime_env", {}).get("env_vars", {}))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=rank_step, args=(r, args.ranks, args.port, args.reps, args.set, enum, q))
             for r in range(args.ranks)]
    for p in procs:
        p.start()
    while True:  # a rank that dies never puts: poll, so that its failure ends the run
        try:
            times, metrics, prompt_lengths = q.get(timeout=5)
            break
        except queue.Empty:
            if any(p.exitcode for p in procs):
                for p in procs:
                    p.kill()
                raise SystemExit(f"a rank failed: exit codes {[p.exitcode for p in procs]}")
    for p in procs:
        p.join()
    res = {"benchmark": "learner_step", "softverify": str(Path(softverify.__file__).parent), "machine": machine(),
           "ranks": args.ranks, "estimator": args.estimator, "overrides": args.set, "completion_lengths": LENGTHS,
           "prompt_lengths": prompt_lengths, "step_s": times, "step_s_median": statistics.median(times[1:]),
           "page_faults": metrics.get("page_faults"),
           "encoded_tokens": metrics.get("learn_encoded_tokens_sum"), "real_tokens": metrics.get("learn_real_tokens_sum")}
    res.update({k: v for k, v in metrics.items() if k.startswith("head_positions")})
    print(json.dumps({k: res[k] for k in ("softverify", "ranks", "estimator", "overrides", "step_s", "page_faults",
                                          "step_s_median",
                                          "encoded_tokens", "real_tokens") + tuple(k for k in res if k.startswith("head_"))}))
    print("wrote", write_result(args.out, res))


if __name__ == "__main__":
    main()
