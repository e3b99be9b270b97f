"""Behaviour unchanged? The same short `softverify train` runs with two checkouts, their
per-step metrics and logged samples compared key by key (for refactors that must not change
what a run computes).

Each training mode runs for --steps steps on the default job's data and model (direct
enumerate = the default job; CoT sampled GRPO; CoT enumerate), once per checkout, with
PYTHONPATH pointing at that checkout (the CLI, its Ray actors and DeepSpeed ranks all import
from there). Timing, throughput and memory keys are left out; every other metric must be
equal, and samples.jsonl byte-identical.

    SOFTVERIFY_DATA_MIRROR=../shared/data/perturbqa python benchmarks/ab_per_step.py \\
        --base /path/to/old/checkout --new . --out runs/ab
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

MODES = {
    "direct_enum": [],
    "cot_sample": ["prompt.style=cot", "rollout.max_new_tokens=24", "rollout.prompts_per_step=4",
                   "rollout.group_size=4"],
    "cot_enum": ["prompt.style=cot", "algorithm.estimator=enumerate", "rollout.max_new_tokens=24",
                 "rollout.prompts_per_step=4", "rollout.group_size=2"],
}
VOLATILE = ("time/", "throughput/", "learn_page_faults", "mem/")


def run(tree: Path, mode: str, out: Path, steps: int, mirror: str) -> None:
    cmd = ["softverify", "train", "--data-mirror", mirror, "--set", f"trainer.steps={steps}",
           "--set", "trainer.eval_every=0", "--set", "trainer.progress=false", "--set", f"trainer.output_dir={out}"]
    cmd += [x for o in MODES[mode] for x in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    with open(out.with_suffix(".log"), "w") as f:
        subprocess.run(cmd, check=True, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=tree)


def compare(a_dir: Path, b_dir: Path) -> dict:
    a = [json.loads(line) for line in (a_dir / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (b_dir / "metrics.jsonl").read_text().splitlines()]
    keys, diffs = set(), []
    for ra, rb in zip(a, b):
        for k in sorted(set(ra) | set(rb)):
            if any(v in k for v in VOLATILE):
                continue
            keys.add(k)
            va, vb = ra.get(k), rb.get(k)
            nan = isinstance(va, float) and isinstance(vb, float) and math.isnan(va) and math.isnan(vb)
            if va != vb and not nan:
                diffs.append({"step": ra.get("step"), "key": k, "base": va, "new": vb})
    same_samples = (a_dir / "samples.jsonl").read_bytes() == (b_dir / "samples.jsonl").read_bytes()
    return {"steps": [len(a), len(b)], "keys": sorted(keys), "differences": diffs, "samples_identical": same_samples}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the checkout before the change")
    ap.add_argument("--new", default=".", help="the checkout after it")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", default="runs/ab")
    args = ap.parse_args()
    mirror = os.environ.get("SOFTVERIFY_DATA_MIRROR", "../shared/data/perturbqa")
    out = Path(args.out).resolve()
    report = {}
    for mode in args.modes.split(","):
        for side in ("base", "new"):
            d = out / side / mode
            d.parent.mkdir(parents=True, exist_ok=True)
            run(Path(getattr(args, side)), mode, d, args.steps, str(Path(mirror).resolve()))
        report[mode] = compare(out / "base" / mode, out / "new" / mode)
        r = report[mode]
        print(f"{mode}: {r['steps'][0]} vs {r['steps'][1]} steps, {len(r['keys'])} keys compared, "
              f"{len(r['differences'])} differ, samples.jsonl identical: {r['samples_identical']}", flush=True)
    (out / "ab_per_step.json").write_text(json.dumps(report, indent=1))
    ok = all(not r["differences"] and r["samples_identical"] for r in report.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
