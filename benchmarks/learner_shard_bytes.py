"""Bytes each learner rank receives per step: the whole batch (before) vs its own shard (after).

Builds a real direct-mode step (16 PerturbQA K562 prompts x the 2 enumerated candidates,
rendered and tokenised by the rollout worker's code on SmolLM2) and cuts it the way
``LearnerGroup.train_step`` does. Sizes are Ray's own serialisation (``ray.cloudpickle``) of
what each rank's ``train_step`` task fetches. Deterministic: no timing involved.

    python benchmarks/learner_shard_bytes.py --prompts 16 --ranks 2
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, rbio_rows  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--ranks", type=int, default=2)
    args = ap.parse_args()

    from ray import cloudpickle

    from softverify.actors.rollout import RolloutCore
    from softverify.config import build_config
    from softverify.learner.rank import shard_indices
    from softverify.model.names import resolve_model_path

    cfg = build_config({"prompt": {"style": "direct"}})
    core = RolloutCore(resolve_model_path("smollm2"), cfg.model, cfg.rollout)
    rows = rbio_rows(args.prompts)
    samples = core.candidates(rows, cfg.algorithm.answer_candidates, list(range(len(rows))))
    unit = len(cfg.algorithm.answer_candidates)
    shards = [[g * unit + j for g in gs for j in range(unit)] for gs in shard_indices(len(rows), args.ranks)]
    full = len(cloudpickle.dumps(samples))
    per_rank = [len(cloudpickle.dumps([samples[i] for i in idx])) for idx in shards]
    out = {"machine": machine(), "samples": len(samples), "ranks": args.ranks,
           "before_bytes_per_rank": full, "before_total": full * args.ranks,
           "after_bytes_per_rank": per_rank, "after_total": sum(per_rank),
           "ratio_total_after_over_before": sum(per_rank) / (full * args.ranks)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "learner_shard_bytes.json").write_text(json.dumps(out, indent=1))
    print(f"{len(samples)} samples, {args.ranks} ranks: before {full} B to every rank ({full * args.ranks} B moved); "
          f"after {per_rank} B ({sum(per_rank)} B moved, {out['ratio_total_after_over_before']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
