"""The GPU path in one short script: the Ray-free classes on CUDA (issue 16, item 5).

What it exercises, in order, and prints as one JSON summary (also results/<out>.json):

1. ``HFEngine`` generating with behaviour logprobs (own decode loop) from a random-weight
   model of a 0.5B-class shape (Qwen2-0.5B's layer shape -- 24 layers, hidden 896, 14 heads,
   2 KV heads, MLP 4864 -- with SmolLM2's tokenizer and vocabulary: ~0.36B parameters):
   tokens/s after one warm-up call.
2. ``Learner`` (DeepSpeed, one rank; NCCL backend on CUDA): the engine's behaviour logprobs
   against the learner's own (same weights: they must agree up to kernel numerics), then one
   GRPO step on those samples, timed.
3. ``WeightBroadcaster`` (softverify.collective_sync): the learner's state dict broadcast to
   a second member that loads it into the engine; afterwards the engine's logprobs must equal
   the learner's. NCCL when two GPUs are visible (NCCL needs one device per rank); with one
   GPU the same code runs over gloo from host copies, and the summary says so.

No Ray, no vLLM, no data files (questions are built from a fixed gene list), so it runs from
a clean checkout on a bare GPU machine with torch, transformers, deepspeed and the embedded
SmolLM2 tokenizer installed. On CPUs, ``--shape tiny --device cpu`` runs the same steps in
seconds (tests/learning/test_gpu_path_script.py does, so the script cannot rot unseen).

    python benchmarks/gpu_path.py                       # CUDA, 0.5B-class shape (a few minutes)
    python benchmarks/gpu_path.py --shape tiny --device cpu --out gpu_path_cpu_smoke
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"
GENES = ["TP53", "MYC", "GATA1", "KLF1", "CDKN1A", "HBG1", "TAL1", "LMO2", "RPL5", "NDUFA4", "MT-CO1", "HBZ"]
SHAPES = {
    # Qwen2-0.5B's decoder layers with SmolLM2's 49,152-token vocabulary
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}


def questions(n: int) -> list[dict]:
    """``n`` rbio1-style knockdown questions over a fixed gene list (no data files needed)."""
    out = []
    for i in range(n):
        a, b = GENES[i % len(GENES)], GENES[(3 * i + 5) % len(GENES)]
        out.append({"question": f"Is a knockdown of {a} in K562 cells likely to result in differential "
                                f"expression of {b}?", "label": i % 2, "pert": a, "gene": b})
    return out


def build_model(shape: str, out: Path, seed: int = 0) -> tuple[Path, int]:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from softverify.models import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("smollm2"))
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
                      **SHAPES[shape])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out, sum(p.numel() for p in model.parameters())


def samples_from(pb, rows, gens):
    from softverify.types import Sample

    out = []
    for i, (row, gs) in enumerate(zip(rows, gens)):
        for g in gs:
            out.append(Sample(prompt_id=str(i), prompt=pb.texts[i], completion=g.text, metadata=row, group=i,
                              prompt_token_ids=pb.token_ids[i], completion_token_ids=list(g.token_ids),
                              behaviour_logprobs=list(g.logprobs), finish_reason=g.finish_reason))
    return out


def max_gap(a: list[list[float]], b: list[list[float]]) -> float:
    return max((abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)), default=0.0)


def broadcast(learner, engine, device, dtype: str) -> dict:
    """Learner rank 0's state -> a second member -> engine.load_weights, over the collective."""
    import torch

    from softverify.cluster import free_port
    from softverify.collective_sync import WeightBroadcaster
    from softverify.weightsync import cast_for_sync

    two_gpus = device.type == "cuda" and torch.cuda.device_count() >= 2
    backend = "nccl" if two_gpus else "gloo"
    devs = (torch.device("cuda", 0), torch.device("cuda", 1)) if two_gpus else (torch.device("cpu"),) * 2
    state = cast_for_sync(learner.state_dict(), dtype)
    port, got, errors = free_port(), {}, []

    def member(rank):
        try:
            b = WeightBroadcaster(rank, 2, "127.0.0.1", port, backend=backend, device=devs[rank], timeout_s=120)
            if rank == 0:
                t = time.perf_counter()
                got["bytes"] = b.send({k: v.to(devs[0]) for k, v in state.items()})
                got["send_s"] = time.perf_counter() - t
            else:
                got["state"] = b.receive()
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=member, args=(r,)) for r in (0, 1)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"weight broadcast failed: {errors}")
    engine.load_weights({k: v.to(engine.device) for k, v in got["state"].items()})
    return {"backend": backend, "why": "two GPUs: NCCL, GPU to GPU" if two_gpus else
            ("one GPU: NCCL needs a device per rank, so gloo from host copies" if device.type == "cuda"
             else "CPU: gloo"), "bytes": got["bytes"], "send_s": got["send_s"], "wall_s": wall,
            "GB_per_s": got["bytes"] / max(got["send_s"], 1e-9) / 1e9}


def main(argv: list[str] | None = None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="0.5b", help="model shape (default 0.5b)")
    ap.add_argument("--dtype", help="engine/learner dtype (default: bfloat16 on cuda, float32 on cpu)")
    ap.add_argument("--prompts", type=int, default=16, help="questions per step (default 16)")
    ap.add_argument("--group", type=int, default=8, help="completions per question (default 8)")
    ap.add_argument("--new-tokens", type=int, default=128, help="generated tokens per completion (default 128)")
    ap.add_argument("--sync-dtype", help="wire dtype of the broadcast (default: the model's dtype, so the "
                    "engine ends bit-equal to the learner)")
    ap.add_argument("--out", default="gpu_path", help="results/<out>.json (default gpu_path)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here; use --device cpu")
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")

    from softverify.cluster import free_port
    from softverify.config import build_config
    from softverify.engines.base import SamplingParams, render_turns
    from softverify.engines.hf import HFEngine
    from softverify.learner import LearnBatch, Learner
    from softverify.prompts import row_messages

    res: dict = {"device": str(device), "shape": args.shape, "dtype": dtype,
                 "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                 "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        model_dir, n_params = build_model(args.shape, Path(tmp) / "model")
        res["params"], res["build_s"] = n_params, time.perf_counter() - t

        # 1. engine: generation with behaviour logprobs
        engine = HFEngine(str(model_dir), dtype, batch_size=args.prompts * args.group, device=str(device),
                          decode="loop")
        rows = questions(args.prompts)
        pb = render_turns(engine, [row_messages(r) for r in rows], "<think>\n")
        sp = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, seed=0)
        engine.generate(pb.token_ids[:2], SamplingParams(max_new_tokens=8, seed=1), n=2)  # warm-up
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        t = time.perf_counter()
        gens = engine.generate(pb.token_ids, sp, n=args.group)
        sync()
        gen_s = time.perf_counter() - t
        n_tok = sum(len(g.token_ids) for gs in gens for g in gs)
        res["generate"] = {"completions": args.prompts * args.group, "tokens": n_tok, "seconds": gen_s,
                           "tokens_per_s": n_tok / gen_s}
        samples = samples_from(pb, rows, gens)

        # 2. learner: logprobs agree with the engine's, then one GRPO step
        cfg = build_config({
            "model": {"path": str(model_dir), "dtype": dtype},
            "rollout": {"prompts_per_step": args.prompts, "group_size": args.group,
                        "max_new_tokens": args.new_tokens},
            "learner": {"num_ranks": 1, "num_gpus_per_rank": 1 if device.type == "cuda" else 0,
                        "micro_batch_size": min(32, args.prompts * args.group), "lr": 1e-5},
        }, [])
        t = time.perf_counter()
        learner = Learner(cfg, str(model_dir), master_port=free_port())
        res["learner_init_s"] = time.perf_counter() - t
        res["learner_device"] = str(learner.device)
        res["behaviour_vs_learner_max_abs_logprob_gap"] = max_gap(learner.logprobs(samples),
                                                                  [s.behaviour_logprobs for s in samples])
        import numpy as np

        lengths = np.array([len(s.completion_token_ids) for s in samples], dtype=np.float64)
        adv = (lengths - lengths.mean()) / (lengths.std() + 1e-6)  # any real spread of advantages will do
        n_tokens = int(lengths.sum())
        sync()
        t = time.perf_counter()
        metrics = learner.train_step(LearnBatch(samples, adv, n_tokens, len(samples)))
        sync()
        res["learn"] = {"seconds": time.perf_counter() - t, "tokens": n_tokens,
                        "pg_loss": float(metrics.get("pg_loss_sum", float("nan"))),
                        "grad_norm": float(metrics.get("grad_norm", float("nan"))),
                        "entropy": float(metrics.get("entropy", float("nan")))}

        # 3. the weight broadcast; the engine then holds the learner's updated weights
        before = max_gap(learner.logprobs(samples), engine.score([s.prompt_token_ids for s in samples],
                                                                 [s.completion_token_ids for s in samples], 1.0))
        res["sync"] = broadcast(learner, engine, device, args.sync_dtype or dtype)
        after = max_gap(learner.logprobs(samples), engine.score([s.prompt_token_ids for s in samples],
                                                                [s.completion_token_ids for s in samples], 1.0))
        res["sync"].update(engine_vs_learner_gap_before=before, engine_vs_learner_gap_after=after)
    print(json.dumps(res, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
