"""One GRPO step: softverify's Trainer vs TRL's GRPOTrainer at identical settings, one run.

Both sides: SmolLM2-135M-Instruct fp32 on CPU, the same real rbio1 prompts (chat template +
"<think>\\n" assistant prefix), 4 prompts x 4 completions, the same max new tokens,
temperature 1, the same reward (hard verifier + 0.5 x format verifier, softverify's own
classes wrapped as TRL reward functions), AdamW lr 1e-6, no KL term, clip 0.2/0.28,
token-mean loss, no gradient checkpointing, one optimisation pass per batch.
TRL runs with ``use_vllm=False`` (HF generate). Each side runs in its own subprocess, one
warm-up step then ``--steps`` timed steps; seconds per step are compared as a ratio.
softverify runs once per ``--sv`` layout ("WxR" = W rollout workers, R learner ranks).
Known difference: TRL's HF path has no stop strings, so its completions run to EOS or the
token budget; softverify stops at "</answer>". Tokens per step are reported for both.

    pip install -e '.[bench]'
    python benchmarks/step_vs_trl.py                 # 128 new tokens, 1 warm-up + 2 steps
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_PERTURBQA, machine, write_result  # noqa: E402

LR, PROMPTS, GROUP, PREFIX = 1e-6, 4, 4, "<think>\n"


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

    from softverify.models import resolve_model_path
    from softverify.prompts import row_messages
    from softverify.types import Sample
    from softverify.verifiers.base import build_verifier

    path = resolve_model_path("smollm2")
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    rows = _rows(PROMPTS * (args.steps + 1))
    data = [{"prompt": tok.apply_chat_template(row_messages(r), tokenize=False, add_generation_prompt=True) + PREFIX,
             "label": int(r["label"])} for r in rows]
    hard, fmt = build_verifier("hard"), build_verifier("format")

    def _samples(completions, label):
        return [Sample(prompt_id="", prompt="", completion=PREFIX + c, metadata={"label": l})
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
        use_vllm=False, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        shuffle_dataset=False, logging_steps=1, report_to="none", save_strategy="no", seed=0,
        reward_weights=[1.0, 0.5], max_grad_norm=1.0, dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=[hard_reward, format_reward], args=cfg,
                          train_dataset=datasets.Dataset.from_list(data), processing_class=tok,
                          callbacks=[Timer()])
    trainer.train()
    return {"step_s": steps_t, "tokens": tokens}


# ---------------------------------------------------------------------------- softverify side
#: The settings TRL's side runs with, pinned on softverify's side so that a change of
#: softverify's defaults (the direct style, the enumerated estimator, top-6-layer training...)
#: cannot silently turn this into a different comparison: the CoT prompt with sampled GRPO,
#: every group learned from, every weight trained, no warm-up, no entropy bonus.
TRL_MATCHED = [
    "prompt.style=cot", "algorithm.estimator=sample", "algorithm.advantage=grpo", "algorithm.entropy_coef=0",
    "algorithm.kl_coef=0", "algorithm.loss_agg=token_mean", "algorithm.dynamic_sampling=none",
    "algorithm.eps_low=0.2", "algorithm.eps_high=0.28", "learner.train_layers=null", "learner.lr_warmup_steps=0",
    "learner.lr_schedule=constant", "learner.grad_clip=1.0",
    "verifiers=[{kind: hard, weight: 1.0}, {kind: format, weight: 0.5}]",
]


def run_softverify(args) -> dict:
    from softverify.config import build_config
    from softverify.platform.train.trainer import Trainer

    w, r = (int(x) for x in args.layout.split("x"))
    out = tempfile.mkdtemp(prefix="sv-bench-")
    cfg = build_config({}, [
        f"data.mirror={SHARED_PERTURBQA}", f"rollout.num_workers={w}", f"learner.num_ranks={r}",
        f"rollout.torch_threads={args.threads}", f"learner.torch_threads={args.threads}",
        f"rollout.prompts_per_step={PROMPTS}", f"rollout.group_size={GROUP}",
        f"rollout.max_new_tokens={args.max_new_tokens}", f"rollout.hf_decode={args.hf_decode}",
        f"learner.lr={LR}", f"learner.micro_batch_size={PROMPTS * GROUP // r}", "learner.zero_stage=1",
        f"trainer.steps={args.steps + 1}", f"trainer.output_dir={out}", "trainer.checkpoint_every=0",
        "trainer.progress=false", "trainer.seed=0", *TRL_MATCHED,
    ])
    tr = Trainer(cfg)
    try:
        tr.fit()
    finally:
        tr.shutdown()
    ms = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines() if l.strip()]
    keys = ["time/step_s", "time/rollout_s", "time/verify_s", "time/learn_s", "time/sync_s"]
    res = {k.split("/")[1]: [m[k] for m in ms] for k in keys}
    res["tokens"] = [int(round(m["response_len_mean"] * PROMPTS * GROUP)) for m in ms]
    # the numbers a refactor must not change (same seed, same config): rewards and loss
    res["reward_mean"] = [m["reward_mean"] for m in ms]
    res["pg_loss"] = [m.get("pg_loss") for m in ms]
    res["grad_norm"] = [m.get("grad_norm") for m in ms]
    return res


# ---------------------------------------------------------------------------- driver
def _child(side: str, args, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--threads", str(args.threads),
           "--max-new-tokens", str(args.max_new_tokens), "--hf-decode", args.hf_decode] + extra
    la0 = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True)
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
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (TRL, each worker/rank)")
    ap.add_argument("--sv", default="1x1,2x2", help="softverify layouts WxR, comma separated")
    ap.add_argument("--hf-decode", choices=["generate", "loop"], default="loop")
    ap.add_argument("--side", choices=["trl", "softverify"], help=argparse.SUPPRESS)
    ap.add_argument("--layout", default="1x1", help=argparse.SUPPRESS)
    ap.add_argument("--trl-from", help="reuse the 'trl' run of an earlier result JSON instead of running TRL again")
    ap.add_argument("--out", default="step_vs_trl")
    args = ap.parse_args(argv)
    if args.side:
        res = run_trl(args) if args.side == "trl" else run_softverify(args)
        print("RESULT " + json.dumps(res), flush=True)
        return
    if args.trl_from:
        runs = {"trl": json.loads(Path(args.trl_from).read_text())["runs"]["trl"]}
        runs["trl"]["reused_from"] = args.trl_from
    else:
        runs = {"trl": _child("trl", args, [])}
        write_result(args.out + "_trl", {"benchmark": "step_vs_trl", "args": vars(args), "machine": machine(),
                                         "runs": runs})
    print("trl:", runs["trl"], flush=True)
    for layout in [s for s in args.sv.split(",") if s]:
        runs[f"softverify_{layout}"] = _child("softverify", args, ["--layout", layout])
        print(f"softverify {layout}:", runs[f"softverify_{layout}"], flush=True)
    summary = {}
    for name, r in runs.items():
        timed = r["step_s"][1:]  # drop the warm-up step
        summary[name] = {"step_s_median": statistics.median(timed), "step_s_mean": statistics.mean(timed),
                         "tokens_per_step": r["tokens"][1:]}
    trl = summary["trl"]["step_s_median"]
    print(f"\n{'run':<18}{'s/step':>9}{'TRL/this':>10}")
    for name, s in summary.items():
        s["speedup_vs_trl"] = trl / s["step_s_median"]
        print(f"{name:<18}{s['step_s_median']:9.1f}{s['speedup_vs_trl']:10.2f}")
    print("wrote", write_result(args.out, {"benchmark": "step_vs_trl", "args": vars(args), "machine": machine(),
                                           "runs": runs, "summary": summary}))


if __name__ == "__main__":
    main()
