"""Milliseconds per decode step of the rollout engine's model, one kernel change at a time.

A rollout step's cost on CPU is its decode steps: every live row through the model, one
token each, then sampling. This times that step at a fixed number of rows with nothing
stopping early (so variants do the same work), on real rbio1 CoT prompts (system prompt +
chat template + "<think>\\n", ~200 tokens) whose KV cache grows by ``--steps`` tokens:

  plain      F.linear + HF's DynamicCache (torch.cat per token): what HF ``generate`` runs
  reserved   F.linear + softverify's ReservedLayer cache (room for the whole budget up front)
  prepacked  oneDNN-prepacked linears + DynamicCache
  both       prepacked + reserved: softverify's rollout engine (fp32)
  both_bf16  the same with the policy in bfloat16 (rollout.dtype=bfloat16)

and the sampler on ``[rows, vocab]`` probabilities: ``torch.multinomial`` against
softverify's inverse-CDF ``sample_rows``. Variants are interleaved per repetition.

    python benchmarks/decode_step.py                 # 8 rows (one worker of the 2x2 step), 128 steps
    python benchmarks/decode_step.py --rows 16
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, rbio_rows, write_result  # noqa: E402

VARIANTS = ["plain", "reserved", "prepacked", "both", "both_bf16"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=8, help="live rows in every decode step")
    ap.add_argument("--steps", type=int, default=128, help="decode steps (the cache grows by one each)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from {VARIANTS}")
    ap.add_argument("--out", default="decode_step")
    args = ap.parse_args(argv)

    import torch
    from transformers import DynamicCache

    from softverify.engines.base import with_assistant_prefix
    from softverify.engines.hf import HFEngine, sample_rows
    from softverify.engines.kvcache import reserved_cache
    from softverify.model.names import resolve_model_path
    from softverify.model.loading import left_pad
    from softverify.task.prompts import STYLE_DEFAULTS, row_messages

    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variants {bad}; expected names from {VARIANTS}")
    path = resolve_model_path("smollm2")
    engines = {
        "plain": HFEngine(path, torch_threads=args.threads, prepack=False),
        "packed": HFEngine(path, torch_threads=args.threads, prepack=True),
    }
    if "both_bf16" in variants:
        engines["bf16"] = HFEngine(path, "bfloat16", torch_threads=args.threads, prepack=True)
    eng = engines["plain"]
    style = STYLE_DEFAULTS["cot"]
    rows = rbio_rows(args.rows)
    pb = with_assistant_prefix(eng.render([row_messages(r, style["system_prompt"]) for r in rows]),
                               eng.tokenizer, style["assistant_prefix"])
    ids, attn, pos = left_pad(pb.token_ids, eng.tokenizer.pad_token_id)
    setup = {"plain": ("plain", False), "reserved": ("plain", True), "prepacked": ("packed", False),
             "both": ("packed", True), "both_bf16": ("bf16", True)}

    @torch.no_grad()
    def decode(v: str) -> float:
        """Seconds for ``args.steps`` decode steps after the prompts' prefill (not timed)."""
        e, reserve = setup[v]
        model = engines[e].model
        cache = reserved_cache(model.config, ids.shape[1] + args.steps) if reserve else DynamicCache(config=model.config)
        out = model(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
        nxt = out.logits[:, -1].float().argmax(-1)
        a, p = attn, pos[:, -1] + 1
        t0 = time.perf_counter()
        for _ in range(args.steps):
            a = torch.cat([a, torch.ones((a.shape[0], 1), dtype=a.dtype)], dim=1)
            out = model(input_ids=nxt[:, None], attention_mask=a, position_ids=p[:, None], past_key_values=cache,
                        use_cache=True)
            nxt = out.logits[:, -1].float().argmax(-1)  # sampling is timed on its own below
            p = p + 1
        return time.perf_counter() - t0

    def sampler(fn) -> float:
        probs = torch.softmax(torch.randn(args.rows, eng.model.config.vocab_size), -1)
        fn(probs)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            fn(probs)
        return time.perf_counter() - t0

    samplers = {"multinomial": lambda pr: torch.multinomial(pr, 1)[:, 0], "inverse_cdf": sample_rows}
    for v in variants:  # warm-up
        decode(v)
    ms: dict[str, list[float]] = {v: [] for v in [*variants, *samplers]}
    for rep in range(args.reps):
        order = variants[rep % len(variants):] + variants[: rep % len(variants)]
        for v in order:
            ms[v].append(decode(v) / args.steps * 1e3)
            print(f"rep {rep} {v:<10} {ms[v][-1]:7.1f} ms/step", flush=True)
        for k, fn in samplers.items():
            ms[k].append(sampler(fn) / args.steps * 1e3)
    base = statistics.median(ms["plain"]) if "plain" in ms and ms["plain"] else None
    res = {}
    print(f"\n{'variant':<12}{'ms/step':>9}{'x plain':>9}")
    for k, v in ms.items():
        med = statistics.median(v)
        res[k] = {"ms_per_step": v, "median_ms": med}
        if base and k in VARIANTS:
            res[k]["speedup_vs_plain"] = base / med
        print(f"{k:<12}{med:9.2f}{res[k].get('speedup_vs_plain', float('nan')):9.2f}")
    payload = {"benchmark": "decode_step", "args": vars(args), "machine": machine(),
               "prompt_tokens": ids.shape[1], "results": res}
    print("wrote", write_result(args.out, payload))
    return payload


if __name__ == "__main__":
    main()
