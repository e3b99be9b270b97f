"""How often a forced CoT answer parses, per system prompt (the cot rung's prompt choice).

With ``rollout.force_answer`` a turn left open after the reasoning budget gets ``</think>``
``<answer>`` appended and its answer *sampled*. If the sampled answer is not ``yes``/``no``
the completion earns no verifier reward and its group teaches nothing. This runs the real
rollout path (``RolloutCore.generate`` with forcing, no Ray) of the base SmolLM2 on real
K562 train questions under each prompt and counts, of the forced completions, how many
parse, with a Wilson 95% interval.

    python benchmarks/cot_forced_parse.py --questions 32 --group 2 --max-new-tokens 32
"""
from __future__ import annotations

import argparse
import json
import time

from _common import RESULTS, machine, rbio_rows


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (sane at 0 and n, unlike the normal one)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / den
    return mid - half, mid + half


def forced_parse(prompt: str, rows, args) -> dict:
    from softverify.config import build_config
    from softverify.engines.base import SamplingParams
    from softverify.actors.rollout import RolloutCore
    from softverify.model.names import resolve_model_path
    from softverify.task.answer import parse_answer

    cfg = build_config({"prompt": {"style": "cot"}, "rollout": {
        "max_new_tokens": args.max_new_tokens, "force_answer": True, "system_prompt": prompt,
        "torch_threads": args.threads, "batch_size": 64}}, [])
    core = RolloutCore(resolve_model_path(cfg.model.path), cfg.model, cfg.rollout)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, stop=list(cfg.rollout.stop),
                              seed=args.seed)
    t0 = time.time()
    samples = core.generate(rows, args.group, sampling)
    forced = [s for s in samples if s.forced_mask and any(s.forced_mask)]
    ok = sum(parse_answer(s.completion) is not None for s in forced)
    lo, hi = wilson(ok, len(forced))
    return {"completions": len(samples), "forced": len(forced), "forced_parsed": ok,
            "forced_parse_rate": ok / len(forced) if forced else float("nan"), "ci95": [lo, hi],
            "answered_unforced": len(samples) - len(forced), "seconds": time.time() - t0,
            "examples": [s.completion[-60:] for s in forced[:4]]}


def main() -> None:
    from softverify.task.prompts import COT_ANSWER_PROMPT, RBIO_SYSTEM_PROMPT

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=32, help="K562 train questions (default 32)")
    ap.add_argument("--group", type=int, default=2, help="completions per question (default 2)")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="reasoning budget before forcing (default 32)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ap.add_argument("--out", default="cot_forced_parse", help="results/<out>.json (default cot_forced_parse)")
    args = ap.parse_args()
    rows = rbio_rows(args.questions)
    res = {"settings": vars(args), "machine": machine(), "prompts": {}}
    for name, prompt in (("rbio1", RBIO_SYSTEM_PROMPT), ("cot_answer", COT_ANSWER_PROMPT)):
        r = forced_parse(prompt, rows, args)
        res["prompts"][name] = r
        print(f"{name:10s} forced {r['forced']}/{r['completions']}  parsed {r['forced_parsed']}/{r['forced']} "
              f"= {r['forced_parse_rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]  ({r['seconds']:.0f} s)",
              flush=True)
        for e in r["examples"]:
            print("    ...", repr(e))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
