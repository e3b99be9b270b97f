"""What one weight sync ships, per sync option, for the real SmolLM2-135M (issue 16: sync bytes
before and after).

The numbers come from the code a run syncs with, not from arithmetic on parameter counts: a
Ray-free :class:`softverify.learner.rank.Learner` (one DeepSpeed rank) is built for each option, and its
``state_dict(trainable_only)`` goes through ``weightsync.cast_for_sync`` and ``state_bytes``,
exactly what ``LearnerActor.sync_state`` does before the trainer ships it (the trainer passes
``trainable_only`` when ``learner.train_layers`` or LoRA restricts what trains). The time to cast
and copy the state on the rank is printed too; the transfer itself (object store or collective)
is measured by ``step_vs_trl.py``'s ``sync_s``.

    python benchmarks/sync_bytes.py            # -> results/sync_bytes.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _common import machine, write_result  # noqa: E402

OPTIONS = {
    # name: learner overrides (LearnerConfig.partial_sync decides trainable_only, as in a run)
    "full fp32 (every weight trains; before)": {"train_layers": None},
    "full bf16": {"train_layers": None, "sync_dtype": "bfloat16"},
    "top 6 layers fp32 (the default learner.train_layers)": {"train_layers": 6},
    "top 6 layers bf16": {"train_layers": 6, "sync_dtype": "bfloat16"},
    "top 1 layer fp32": {"train_layers": 1},
    "LoRA r=16, all 7 projections, fp32, adapters (learner.lora.sync default)": {
        "train_layers": None, "lora": {"enabled": True}},
    "LoRA r=16, all 7 projections, fp32, merged": {"train_layers": None, "lora": {"enabled": True, "sync": "merged"}},
    "LoRA r=16, all 7 projections, bf16, adapters": {"train_layers": None, "lora": {"enabled": True},
                                                     "sync_dtype": "bfloat16"},
}


def measure(model_path: str, over: dict) -> dict:
    """One option, in this process (one DeepSpeed world per process: main() runs each option
    in its own subprocess)."""
    import torch

    from softverify.infra.cluster import free_port
    from softverify.config import build_config
    from softverify.learner.rank import Learner
    from softverify.sync.wire import cast_for_sync, state_bytes

    sync_dtype = over.get("sync_dtype", "float32")
    learner_over = {k: v for k, v in over.items() if k != "sync_dtype"}
    cfg = build_config({"model": {"path": model_path},
                        "learner": {"num_ranks": 1, "sync_dtype": sync_dtype, **learner_over}}, [])
    partial = cfg.learner.partial_sync  # what Trainer._sync_weights passes
    learner = Learner(cfg, model_path, master_port=free_port())
    params = list(learner.engine.module.parameters())
    t = time.perf_counter()
    state = cast_for_sync(learner.state_dict(trainable_only=partial), cfg.learner.sync_dtype)
    took = time.perf_counter() - t
    return {"trainable_only": partial, "sync_dtype": cfg.learner.sync_dtype, "tensors": len(state),
            "bytes": state_bytes(state), "params_total": sum(p.numel() for p in params),
            "params_trained": sum(p.numel() for p in params if p.requires_grad), "state_on_rank_s": took,
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--out", default="sync_bytes")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this option here, print JSON
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from softverify.model.names import resolve_model_path

    path = resolve_model_path(args.model)
    if args.one:
        print("RESULT " + json.dumps(measure(path, OPTIONS[args.one])))
        return {}
    res = {}
    for name in tqdm(OPTIONS, desc="sync options"):
        r = subprocess.run([sys.executable, __file__, "--model", args.model, "--one", name], capture_output=True,
                           text=True, timeout=900)
        line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
        if r.returncode != 0 or line is None:
            raise SystemExit(f"option {name!r} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        res[name] = json.loads(line[len("RESULT "):])
    base = res[next(iter(OPTIONS))]["bytes"]
    print(f"{'option':70s} {'tensors':>7s} {'MB':>8s} {'x less':>7s} {'trained params':>15s}")
    for name, r in res.items():
        r["vs_full_fp32"] = base / r["bytes"]
        print(f"{name:70s} {r['tensors']:7d} {r['bytes'] / 1e6:8.1f} {r['vs_full_fp32']:7.1f} "
              f"{r['params_trained']:15,d}")
    print(f"-> {write_result(args.out, {'machine': machine(), 'model': args.model, 'options': res})}")
    return res


if __name__ == "__main__":
    main()
