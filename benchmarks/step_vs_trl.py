"""One GRPO step: softverify's Trainer vs TRL's GRPOTrainer at identical settings, one run.

Both sides: SmolLM2-135M-Instruct fp32 on CPU, the same real rbio1 prompts in the same prompt
style (``--style cot``: the rbio1 system prompt, chat template + "<think>\\n" assistant prefix,
128 new tokens; ``--style direct``: the direct system prompt, the turn opened up to "<answer>",
6 new tokens), 4 prompts x 4 completions, the same max new tokens,
temperature 1, the same reward (hard verifier + 0.5 x format verifier, softverify's own
classes wrapped as TRL reward functions), AdamW lr 1e-6, no KL term, clip 0.2/0.28,
token-mean loss, no gradient checkpointing, one optimisation pass per batch.
TRL runs with ``use_vllm=False`` (HF generate). Each side runs in its own subprocess, one
warm-up step then ``--steps`` timed steps; seconds per step are compared as a ratio.
softverify runs once per ``--sv`` layout ("WxR" = W rollout workers, R learner ranks) and
``--staleness`` value (0 = on-policy; 1 = pipelined: step t+1's rollout overlaps step t's
learning). ``--reps N`` repeats the whole set N times, TRL included, interleaved, and the
summary reports each configuration's ratio against the TRL run of the same repetition.
``--precision bf16`` runs both sides in bf16 mixed precision: TRL with ``bf16=True`` (accelerate
wraps the model's forward in ``torch.autocast(bfloat16)``, so its generation and its training both
compute in bf16 over fp32 weights), softverify with ``learner.mixed_precision=bf16`` (the same
autocast over fp32 master weights) and ``rollout.dtype=bfloat16`` (its engines hold a bf16 copy).
Known difference: TRL's HF path has no stop strings, so its completions run to EOS or the
token budget; softverify stops at "</answer>". Tokens per step are reported for both.

    pip install -e '.[bench]'
    python benchmarks/step_vs_trl.py                 # CoT, 128 new tokens, 1 warm-up + 2 steps
    python benchmarks/step_vs_trl.py --style direct --staleness 0,1 --reps 3
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_PERTURBQA, machine, write_result  # noqa: E402

LR, PROMPTS, GROUP = 1e-6, 4, 4


def style_settings(style: str) -> tuple[str, str, int]:
    """(assistant prefix, system prompt, default new tokens) of a prompt style: what both sides use."""
    from softverify.task.prompts import STYLE_DEFAULTS

    d = STYLE_DEFAULTS[style]
    return d["assistant_prefix"], d["system_prompt"], d["max_new_tokens"]


def _rows(n: int) -> list[dict]:
    from _common import rbio_rows

    return rbio_rows(n)


# ---------------------------------------------------------------------------- TRL side
def run_trl(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from softverify.model.names import resolve_model_path
    from softverify.task.prompts import chat_text, row_messages
    from softverify.types import Sample
    from softverify.verifiers.base import build_verifier

    path = resolve_model_path("smollm2")
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    prefix, system, _ = style_settings(args.style)
    rows = _rows(PROMPTS * (args.steps + 1))
    data = [{"prompt": chat_text(tok, row_messages(r, system), prefix), "label": int(r["label"])} for r in rows]
    hard, fmt = build_verifier("hard"), build_verifier("format")

    def _samples(completions, label):
        return [Sample(prompt_id="", prompt="", completion=prefix + c, metadata={"label": l})
                for c, l in zip(completions, label)]

    def hard_reward(prompts, completions, label, **kw):
        return hard.score(_samples(completions, label)).tolist()

    def format_reward(prompts, completions, label, **kw):
        return fmt.score(_samples(completions, label)).tolist()

    steps_t: list[float] = []
    tokens: list[int] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            steps_t.append(time.perf_counter() - self.t0)
            print(f"trl step {len(steps_t)}: {steps_t[-1]:.1f} s", flush=True)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                tokens.append(int(round(logs["completions/mean_length"] * PROMPTS * GROUP)))

    out = tempfile.mkdtemp(prefix="trl-bench-")
    cfg = GRPOConfig(
        output_dir=out, max_steps=args.steps + 1, per_device_train_batch_size=PROMPTS * GROUP,
        gradient_accumulation_steps=1, num_generations=GROUP, max_completion_length=args.max_new_tokens,
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, beta=0.0,
        epsilon=0.2, epsilon_high=0.28, loss_type="dapo", num_iterations=1, temperature=1.0, top_p=1.0,
        use_vllm=False, use_cpu=True, bf16=args.precision == "bf16", fp16=False, gradient_checkpointing=False,
        shuffle_dataset=False, logging_steps=1, report_to="none", save_strategy="no", seed=0,
        reward_weights=[1.0, 0.5], max_grad_norm=1.0, dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=[hard_reward, format_reward], args=cfg,
                          train_dataset=datasets.Dataset.from_list(data), processing_class=tok,
                          callbacks=[Timer()])
    trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    acc = trainer.accelerator  # bf16=True: accelerate wraps the forward (generation included) in autocast
    return {"step_s": steps_t, "tokens": tokens, "mixed_precision": str(acc.mixed_precision),
            "forward_autocast": bool(acc.native_amp) and hasattr(trainer.model, "_original_forward")}


# ---------------------------------------------------------------------------- softverify side
#: The settings TRL's side runs with, pinned on softverify's side so that a change of
#: softverify's defaults (the direct style, the enumerated estimator, top-6-layer training...)
#: cannot silently turn this into a different comparison: the CoT prompt with sampled GRPO,
#: every group learned from, every weight trained, no warm-up, no entropy bonus.
TRL_MATCHED = [
    "algorithm.estimator=sample", "algorithm.advantage=grpo", "algorithm.entropy_coef=0",
    "algorithm.kl_coef=0", "algorithm.loss_agg=token_mean", "algorithm.dynamic_sampling=none",
    "algorithm.eps_low=0.2", "algorithm.eps_high=0.28", "learner.train_layers=null", "learner.lr_warmup_steps=0",
    "learner.lr_schedule=constant", "learner.grad_clip=1.0",
    "verifiers=[{kind: hard, weight: 1.0}, {kind: format, weight: 0.5}]",
]


#: Layout options after ':' ('+'-joined): settings that are softverify's own choice, not TRL's.
LAYOUT_OPTIONS = {"bf16": "rollout.dtype=bfloat16", "fp32": "rollout.dtype=float32",
                  **{f"z{z}": f"learner.zero_stage={z}" for z in range(4)},
                  "thp": "learner.huge_page_alloc=true", "nokeep": "learner.retain_freed_memory=false",
                  "mp": "learner.mixed_precision=bf16"}

#: softverify's side of ``--precision``: what TRL's ``bf16=True`` computes in bf16.
PRECISION = {"fp32": [], "bf16": ["learner.mixed_precision=bf16", "rollout.dtype=bfloat16"]}


def layout_option(layout: str, option: str) -> str:
    if option.startswith("res") and option[3:].replace(".", "", 1).isdigit():  # resN: reserve N GB per rank
        return f"learner.reserve_memory_gb={option[3:]}"
    if option not in LAYOUT_OPTIONS:
        raise SystemExit(f"layout {layout!r}: option {option!r} after ':' must be one of {sorted(LAYOUT_OPTIONS)} "
                         f"or resN (N GB)")
    return LAYOUT_OPTIONS[option]


def run_softverify(args) -> dict:
    from softverify.config import build_config
    from softverify.platform.train.trainer import Trainer

    shape, _, options = args.layout.partition(":")
    w, r = (int(x) for x in shape.split("x"))
    extra = [layout_option(args.layout, o) for o in options.split("+") if o]
    out = tempfile.mkdtemp(prefix="sv-bench-")
    cfg = build_config({}, [
        f"data.mirror={SHARED_PERTURBQA}", f"rollout.num_workers={w}", f"learner.num_ranks={r}",
        f"rollout.torch_threads={args.threads}", f"learner.torch_threads={args.threads}",
        f"rollout.prompts_per_step={PROMPTS}", f"rollout.group_size={GROUP}",
        f"rollout.max_new_tokens={args.max_new_tokens}", f"rollout.hf_decode={args.hf_decode}",
        f"learner.lr={LR}", f"learner.micro_batch_size={PROMPTS * GROUP // r}", "learner.zero_stage=0",
        f"trainer.steps={args.steps + 1}", f"trainer.output_dir={out}", "trainer.checkpoint_every=0",
        "trainer.progress=false", "trainer.seed=0", f"prompt.style={args.style}",
        f"algorithm.max_staleness={args.staleness_run}", *TRL_MATCHED, *PRECISION[args.precision], *extra,
    ])
    tr = Trainer(cfg)
    try:
        tr.fit()
    finally:
        tr.shutdown()
    ms = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines() if l.strip()]
    shutil.rmtree(out, ignore_errors=True)  # a SmolLM2 run leaves ~3 GB (final model, DeepSpeed checkpoint)
    keys = ["time/step_s", "time/rollout_s", "time/verify_s", "time/learn_s", "time/sync_s"]
    keys += [k for k in ("time/learn_rank_s", "learn_encoded_tokens", "learn_real_tokens")
             if all(k in m for m in ms)]  # absent in older checkouts
    res = {k.split("/")[-1]: [m[k] for m in ms] for k in keys}
    res["sync_bytes"] = [m.get("sync/bytes") for m in ms]
    res["policy_lag"] = [m.get("pipeline/policy_lag") for m in ms]
    res["tokens"] = [int(round(m["response_len_mean"] * PROMPTS * GROUP)) for m in ms]
    # the numbers a refactor must not change (same seed, same config): rewards and loss
    res["reward_mean"] = [m["reward_mean"] for m in ms]
    res["pg_loss"] = [m.get("pg_loss") for m in ms]
    res["grad_norm"] = [m.get("grad_norm") for m in ms]
    # how far the learner's policy is from the sampler's (a bf16 rollout engine shows here)
    res["logp_gap"] = [m.get("logp_gap") for m in ms]
    res["clip_frac"] = [m.get("clip_frac") for m in ms]
    res["learn_page_faults"] = [m.get("learn_page_faults") for m in ms]
    return res


# ---------------------------------------------------------------------------- driver
def _child(side: str, args, extra: list[str], env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--threads", str(args.threads),
           "--max-new-tokens", str(args.max_new_tokens), "--hf-decode", args.hf_decode, "--style", args.style,
           "--precision", args.precision] + extra
    la0 = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"{side} run failed ({proc.returncode})")
    res = json.loads(lines[-1][len("RESULT "):])
    res["loadavg_1m"] = [la0, os.getloadavg()[0]]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    ap.add_argument("--style", choices=["cot", "direct"], default="cot", help="prompt style of both sides")
    ap.add_argument("--max-new-tokens", type=int, help="default: the style's (cot 128, direct 6)")
    ap.add_argument("--staleness", default="0", help="softverify algorithm.max_staleness values, comma separated "
                    "(0 = on-policy, 1 = pipelined)")
    ap.add_argument("--reps", type=int, default=1, help="repetitions of the whole set (TRL included), interleaved")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (TRL, each worker/rank)")
    ap.add_argument("--sv", default="1x1,2x2", help="softverify layouts WxR, comma separated; options after ':', "
                    "'+'-joined: bf16 (rollout engines in bfloat16 beside the fp32 learner, rollout.dtype; not TRL's "
                    "setting), z0-z3 (learner.zero_stage), thp (learner.huge_page_alloc), nokeep "
                    "(learner.retain_freed_memory off), mp (learner.mixed_precision=bf16), resN (learner.reserve_memory_gb=N), e.g. 2x2:bf16+z1")
    ap.add_argument("--hf-decode", choices=["generate", "loop"], default="loop")
    ap.add_argument("--precision", choices=sorted(PRECISION), default="fp32",
                    help="both sides: fp32, or bf16 mixed precision (TRL bf16=True; softverify "
                    "learner.mixed_precision=bf16 + rollout.dtype=bfloat16)")
    ap.add_argument("--side", choices=["trl", "softverify"], help=argparse.SUPPRESS)
    ap.add_argument("--layout", default="1x1", help=argparse.SUPPRESS)
    ap.add_argument("--staleness-run", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--trl-from", help="reuse the 'trl' run of an earlier result JSON instead of running TRL again")
    ap.add_argument("--trl-keep", action="store_true", help="also run TRL with glibc's freed-memory retention "
                    "(the environment variables behind learner.retain_freed_memory) as 'trl_keep'; the summary "
                    "gives each run's step as a fraction of both TRL runs")
    ap.add_argument("--out", default="step_vs_trl")
    args = ap.parse_args(argv)
    if args.max_new_tokens is None:
        args.max_new_tokens = style_settings(args.style)[2]
    if args.side:
        res = run_trl(args) if args.side == "trl" else run_softverify(args)
        print("RESULT " + json.dumps(res), flush=True)
        return
    variants = [(layout, int(st)) for layout in args.sv.split(",") if layout for st in args.staleness.split(",")]
    reps: list[dict[str, dict]] = []
    for rep in range(args.reps):
        runs: dict[str, dict] = {}
        if args.trl_from:
            runs["trl"] = dict(json.loads(Path(args.trl_from).read_text())["runs"]["trl"], reused_from=args.trl_from)
        else:
            runs["trl"] = _child("trl", args, [])
        print(f"rep {rep + 1} trl:", runs["trl"], flush=True)
        if args.trl_keep:
            from softverify.infra.procmem import RETAIN_ENV  # what a TRL user could set by hand

            runs["trl_keep"] = _child("trl", args, [], env=RETAIN_ENV)
            print(f"rep {rep + 1} trl_keep:", runs["trl_keep"], flush=True)
        for layout, st in variants:
            shape, _, opts = layout.partition(":")
            name = f"softverify_{shape}" + "".join(f"_{o}" for o in opts.split("+") if o) + (f"_staleness{st}" if st else "")
            runs[name] = _child("softverify", args, ["--layout", layout, "--staleness-run", str(st)])
            print(f"rep {rep + 1} {name}:", runs[name], flush=True)
        reps.append(runs)
        write_result(args.out, {"benchmark": "step_vs_trl", "args": vars(args), "machine": machine(),
                                "runs": reps[0], "reps": reps, "summary": summarize(reps), "complete": False})
    summary = summarize(reps)
    print(f"\n{'run':<32}{'s/step (median)':>16}{'TRL/this per rep':>24}")
    for name, s in summary.items():
        print(f"{name:<32}{s['step_s_median']:16.1f}{' '.join(f'{r:.2f}' for r in s['speedup_vs_trl_per_rep']):>24}")
    print("wrote", write_result(args.out, {"benchmark": "step_vs_trl", "args": vars(args), "machine": machine(),
                                           "runs": reps[0], "reps": reps, "summary": summary, "complete": True}))


def summarize(reps: list[dict[str, dict]]) -> dict[str, dict]:
    """Per configuration: the median timed step over all repetitions, and its ratio against
    the TRL run of the same repetition (TRL's median / this one's), one per repetition."""
    out: dict[str, dict] = {}
    for name in reps[0]:
        per_rep = [statistics.median(r[name]["step_s"][1:]) for r in reps]  # drop each run's warm-up step
        trl = [statistics.median(r["trl"]["step_s"][1:]) for r in reps]
        ratios = [t / x for t, x in zip(trl, per_rep)]
        out[name] = {"step_s_median": statistics.median(x for r in reps for x in r[name]["step_s"][1:]),
                     "step_s_median_per_rep": per_rep, "speedup_vs_trl_per_rep": ratios,
                     "speedup_vs_trl": statistics.median(ratios), "step_fraction_of_trl": statistics.median(
                         [x / t for t, x in zip(trl, per_rep)]),
                     "tokens_per_step": [r[name]["tokens"][1:] for r in reps]}
        if "trl_keep" in reps[0]:  # against TRL given the same glibc retention by hand
            keep = [statistics.median(r["trl_keep"]["step_s"][1:]) for r in reps]
            out[name]["step_fraction_of_trl_keep_per_rep"] = [x / t for t, x in zip(keep, per_rep)]
        if "sync_bytes" in reps[0][name]:
            out[name]["sync_bytes_per_step"] = reps[0][name]["sync_bytes"][1:]
            out[name]["sync_s_median"] = statistics.median(x for r in reps for x in r[name]["sync_s"][1:])
    return out


if __name__ == "__main__":
    main()
