"""Rollout throughput: softverify's rollout vs plain HF ``generate``, side by side in one run.

Same prompts (real rbio1 questions, chat template + assistant prefix), same model
(SmolLM2-135M-Instruct, fp32), same batch (P prompts x G samples), same max new tokens,
same stop string, same seeds. Variants (pick with --variants):

  hf_generate         plain ``model.generate(do_sample=True, stop_strings=...)``, no logprobs (baseline)
  hf_generate_static  the same with ``cache_implementation="static"``
  engine_generate     HFEngine(decode="generate"): generate + output_logits -> behaviour logprobs
  engine_loop         HFEngine(decode="loop"): shared prefill per group, finished rows leave the batch,
                      oneDNN-prepacked linears (rollout.hf_prepack), reserved KV cache, inverse-CDF sampling
  engine_loop_unpacked  the same with prepack=False (plain F.linear): the prepacking's share
  ray_1w / ray_2w     1 or 2 RolloutWorker actors (decode = --ray-decode) on a local Ray, prompts split

Repetitions are interleaved (every rep runs every variant, in a rotated order) so that the
load of a shared machine hits all variants alike; the ratios are what to read.
Tokens counted = generated tokens up to and including EOS / the stop string.

    python benchmarks/rollout_throughput.py            # defaults: 4 prompts x 4 = 16, 128 tokens
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, rbio_rows, write_result  # noqa: E402

ALL = ["hf_generate", "engine_generate", "engine_loop", "ray_1w", "ray_2w"]
EXTRA = ["hf_generate_static", "engine_loop_unpacked"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4, help="samples per prompt (batch = prompts x group)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions per variant (after one warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in-process and per Ray worker")
    ap.add_argument("--variants", default=",".join(ALL), help=f"comma list from {ALL + EXTRA}")
    ap.add_argument("--ray-decode", choices=["generate", "loop"], default="loop")
    ap.add_argument("--warmup-tokens", type=int, default=8)
    ap.add_argument("--out", default="rollout_throughput")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from softverify.config import ModelConfig, RolloutConfig
    from softverify.engines.base import SamplingParams, with_assistant_prefix
    from softverify.engines.hf import HFEngine
    from softverify.model.names import resolve_model_path
    from softverify.task.prompts import row_messages

    variants = [v for v in args.variants.split(",") if v]
    path = resolve_model_path("smollm2")
    rows = rbio_rows(args.prompts)
    rc = RolloutConfig(num_workers=1, torch_threads=args.threads, batch_size=args.prompts * args.group,
                       max_new_tokens=args.max_new_tokens, hf_decode=args.ray_decode)
    stop = list(rc.stop)

    import inspect

    # plain F.linear; an older checkout (A/B runs with PYTHONPATH) has no prepacking to turn off
    unpacked = {"prepack": False} if "prepack" in inspect.signature(HFEngine).parameters else {}
    engines = {}
    for v, mode, kw in (("engine_generate", "generate", {}), ("engine_loop", "loop", {}),
                        ("engine_loop_unpacked", "loop", unpacked)):
        if v in variants:
            engines[v] = HFEngine(path, torch_threads=args.threads, batch_size=rc.batch_size, decode=mode, **kw)
    base = HFEngine(path, torch_threads=args.threads, batch_size=rc.batch_size, **unpacked)  # plain HF model
    pb = with_assistant_prefix(base.render([row_messages(r) for r in rows]), base.tokenizer, rc.assistant_prefix)
    prompt_ids = pb.token_ids
    tok = base.tokenizer

    def plain(seed: int, max_new: int, static: bool) -> int:
        flat = [p for p in prompt_ids for _ in range(args.group)]
        L = max(map(len, flat))
        ids = torch.full((len(flat), L), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(flat):
            ids[i, L - len(p):] = torch.tensor(p)
            attn[i, L - len(p):] = 1
        torch.manual_seed(seed)
        kw = dict(cache_implementation="static") if static else {}
        with torch.no_grad():
            out = base.model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=max_new, do_sample=True,
                                      temperature=1.0, top_p=1.0, pad_token_id=tok.pad_token_id,
                                      stop_strings=stop, tokenizer=tok, **kw)
        n = 0
        for row in out[:, L:].tolist():  # up to and including EOS (= pad here: rows stopped by a string get pad)
            n += next((i + 1 for i, t in enumerate(row) if t in base.eos_ids), len(row))
        return n

    def engine(e, seed: int, max_new: int) -> int:
        sp = SamplingParams(max_new_tokens=max_new, temperature=1.0, stop=stop, seed=seed)
        return sum(len(g.token_ids) for gs in e.generate(prompt_ids, sp, n=args.group) for g in gs)

    workers = {}
    if any(v.startswith("ray_") for v in variants):
        import ray

        from softverify.actors.rollout import RolloutWorker, sampling_from

        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        for v, k in (("ray_1w", 1), ("ray_2w", 2)):
            if v in variants:
                workers[v] = [RolloutWorker.options(num_cpus=0.5).remote(path, ModelConfig(), rc) for _ in range(k)]
        ray.get([w.ping.remote() for ws in workers.values() for w in ws])

    def rollout(ws, seed: int, max_new: int) -> int:
        import ray

        k = len(ws)
        refs = []
        for w in range(k):
            part = rows[w::k]
            if part:
                sp = sampling_from(rc.model_copy(update={"max_new_tokens": max_new}), seed=seed * 1000 + w)
                refs.append(ws[w].generate.remote(part, args.group, sp))
        return sum(len(s.completion_token_ids) for part in ray.get(refs) for s in part)

    def run(v: str, seed: int, max_new: int) -> int:
        if v == "hf_generate":
            return plain(seed, max_new, False)
        if v == "hf_generate_static":
            return plain(seed, max_new, True)
        if v in engines:
            return engine(engines[v], seed, max_new)
        return rollout(workers[v], seed, max_new)

    errors: dict[str, str] = {}
    for v in variants:  # warm-up: first-call costs (allocator, tokenizer caches, Ray task path)
        try:
            run(v, 10_000, args.warmup_tokens)
        except Exception as e:  # e.g. Ray's OOM killer on a shared box: report it, measure the rest
            errors[v] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    times = {v: [] for v in variants}
    toks = {v: [] for v in variants}
    for rep in range(args.reps):
        order = variants[rep % len(variants):] + variants[: rep % len(variants)]
        for v in order:
            if v in errors:
                continue
            t0 = time.perf_counter()
            try:
                n = run(v, rep, args.max_new_tokens)
            except Exception as e:
                errors[v] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                print(f"rep {rep} {v:<18} FAILED {errors[v]}", flush=True)
                continue
            dt = time.perf_counter() - t0
            times[v].append(dt)
            toks[v].append(n)
            print(f"rep {rep} {v:<18} {n:5d} tok {dt:7.1f} s {n / dt:7.2f} tok/s", flush=True)
    variants = [v for v in variants if toks[v]]
    res = {}
    for v in variants:
        tps = sum(toks[v]) / sum(times[v])
        res[v] = {"tok_s": tps, "tokens": toks[v], "seconds": times[v],
                  "median_rep_tok_s": statistics.median(n / t for n, t in zip(toks[v], times[v]))}
    ref = res.get("hf_generate", {}).get("tok_s")
    print(f"\n{'variant':<20}{'tok/s':>9}{'x hf_generate':>15}")
    for v in variants:
        if ref:
            res[v]["ratio_vs_hf_generate"] = res[v]["tok_s"] / ref
        print(f"{v:<20}{res[v]['tok_s']:9.2f}{res[v].get('ratio_vs_hf_generate', float('nan')):15.2f}")
    for v, err in errors.items():
        print(f"{v:<20} failed: {err}")
    payload = {"benchmark": "rollout_throughput", "args": vars(args), "machine": machine(), "results": res,
               "errors": errors}
    print("wrote", write_result(args.out, payload))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.bar(variants, [res[v]["tok_s"] for v in variants])
        ax.set_ylabel("generated tokens / s")
        ax.set_title(f"rollout, SmolLM2-135M, {args.prompts}x{args.group}, {args.max_new_tokens} new tokens")
        plt.xticks(rotation=20)
        fig.tight_layout()
        fig.savefig(RESULTS / f"{args.out}.png", dpi=100)
    except Exception as e:  # plotting is a nicety
        print("plot skipped:", e)
    return payload


if __name__ == "__main__":
    main()
