"""Scaling on one machine: GRPO steps/s and tokens/s for (rollout workers, learner ranks)
in {1,2} x {1,2}, the real softverify Trainer (SmolLM2-135M, rbio1 prompts, 4 x 4 samples).

Each layout runs in its own subprocess (fresh Ray, fresh DeepSpeed world): one warm-up step,
then ``--steps`` timed steps; the per-phase times come from the Trainer's own metrics.

    python benchmarks/scaling.py                     # CoT, 128 new tokens, 1 warm-up + 2 steps per layout
    python benchmarks/scaling.py --style direct --staleness 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result  # noqa: E402
from step_vs_trl import _child, style_settings  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--style", choices=["cot", "direct"], default="cot", help="prompt style (step_vs_trl's)")
    ap.add_argument("--max-new-tokens", type=int, help="default: the style's (cot 128, direct 6)")
    ap.add_argument("--staleness", type=int, default=0, help="algorithm.max_staleness (1 = pipelined)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layouts", default="1x1,2x1,1x2,2x2", help="WxR: rollout workers x learner ranks")
    ap.add_argument("--hf-decode", choices=["generate", "loop"], default="loop")
    ap.add_argument("--out", default="scaling")
    args = ap.parse_args(argv)
    if args.max_new_tokens is None:
        args.max_new_tokens = style_settings(args.style)[2]
    rows = {}
    for layout in [s for s in args.layouts.split(",") if s]:
        r = _child("softverify", args, ["--layout", layout, "--staleness-run", str(args.staleness)])
        t = {k: statistics.median(v[1:]) for k, v in r.items()
             if k not in ("tokens", "loadavg_1m") and v and isinstance(v[0], (int, float))}
        tok = statistics.mean(r["tokens"][1:])
        rows[layout] = {"raw": r, "median": t, "steps_per_s": 1 / t["step_s"], "tokens_per_step": tok,
                        "rollout_tok_s": tok / t["rollout_s"], "learn_tok_s": tok / t["learn_s"]}
        print(f"{layout}: step {t['step_s']:.1f} s (rollout {t['rollout_s']:.1f}, verify {t['verify_s']:.1f}, "
              f"learn {t['learn_s']:.1f}, sync {t['sync_s']:.1f}); rollout {rows[layout]['rollout_tok_s']:.1f} tok/s, "
              f"learn {rows[layout]['learn_tok_s']:.1f} tok/s, load {r['loadavg_1m']}", flush=True)
    base = rows.get("1x1")
    if base:
        for layout, row in rows.items():
            row["speedup_vs_1x1"] = base["median"]["step_s"] / row["median"]["step_s"]
    print("wrote", write_result(args.out, {"benchmark": "scaling", "args": vars(args), "machine": machine(),
                                           "layouts": rows}))


if __name__ == "__main__":
    main()
