"""Supervised ceiling for the science ladder: cross-entropy on the answer token against
the world model's decisions, on the same questions, layers, prompt and budget as the RL rungs.

Not GRPO: this is the upper bound of what the soft verifier's knowledge can put into the
policy per question seen, with the reward replaced by a direct target. The ladder compares
every RL rung with it. Periodic evals go through the same ``run_eval`` as the RL rungs, at
the same cadence in questions (``eval_every_questions``: the ladder passes its RL rungs'
eval_every x prompts): the budget is wall-clock and includes them on both sides, so a
time-based cadence here (it was every budget/8) spent about half of this rung's 20 minutes
evaluating (7 evals against the RL rungs' 3-4).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np


def run_supervised(*, wm_dir: Path, threshold_policy: str, data_mirror: str | None, seed: int, minutes: float,
                   lr: float, batch_size: int, train_layers: int, periodic_rows, eval_every_questions: int,
                   out: Path, threads: int = 2) -> dict:
    import torch

    from softverify.bio.worldmodel import WorldModel
    from softverify.config import DataConfig, build_config
    from softverify.data import load_prompts
    from softverify.engines.base import with_assistant_prefix
    from softverify.engines.hf import HFEngine
    from softverify.learner.rank import freeze_below_top_layers
    from softverify.model.names import resolve_model_path
    from softverify.evaluation.run import run_eval
    from softverify.task.prompts import row_messages
    from softverify.verifiers.balance import policy_threshold

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    cfg = build_config({"data": {"mirror": data_mirror, "seed": seed}}, [])
    rc = cfg.rollout
    path = resolve_model_path("smollm2")
    engine = HFEngine(path, "float32", torch_threads=threads, batch_size=32, decode="loop")
    model, tok = engine.model, engine.tokenizer
    freeze_below_top_layers(model, train_layers)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rows = load_prompts(DataConfig(mirror=data_mirror, seed=seed, max_prompts=cfg.data.max_prompts), "train")
    wm = WorldModel.load(wm_dir)
    p = wm.predict_proba(list(rows["pert"]), list(rows["gene"]))
    t = wm.threshold if threshold_policy == "model" else policy_threshold(threshold_policy, p)
    ok = np.nonzero(np.isfinite(p))[0]
    yes_id = tok("yes", add_special_tokens=False)["input_ids"][0]
    no_id = tok("no", add_special_tokens=False)["input_ids"][0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(ok)
    curve, seen, step, pos = [], 0, 0, 0
    t0, last_eval = time.monotonic(), 0

    def evaluate() -> None:
        model.eval()
        res = run_eval(engine, periodic_rows, max_new_tokens=rc.max_new_tokens, stop=rc.stop,
                       assistant_prefix=rc.assistant_prefix, batch_size=32, progress=False,
                       system_prompt=rc.system_prompt)
        f = res.forced_metrics
        curve.append({"step": step, "questions": seen, "auroc": f["auroc"], "auroc_lo": f["auroc_lo"],
                      "auroc_hi": f["auroc_hi"], "forced_mcc": f["mcc"], "mcc": res.metrics["mcc"]})
        print(f"[supervised] step {step} questions {seen} forced AUROC {f['auroc']:.3f} MCC {f['mcc']:.3f}", flush=True)
        model.train()

    evaluate()
    model.train()
    while time.monotonic() - t0 < 60 * minutes:
        if pos + batch_size > len(order):
            order, pos = rng.permutation(ok), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        batch = [rows[int(i)] for i in idx]
        pb = with_assistant_prefix(engine.render([row_messages(r, rc.system_prompt) for r in batch]), tok,
                                   rc.assistant_prefix)
        L = max(len(x) for x in pb.token_ids)
        ids = torch.tensor([[tok.pad_token_id] * (L - len(x)) + list(x) for x in pb.token_ids])
        attn = torch.tensor([[0] * (L - len(x)) + [1] * len(x) for x in pb.token_ids])
        pos_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos_ids, use_cache=False,
                       logits_to_keep=1).logits[:, -1].float()
        target = torch.tensor([yes_id if p[int(i)] >= t else no_id for i in idx])
        loss = torch.nn.functional.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        seen += len(idx)
        if seen - last_eval >= eval_every_questions:
            evaluate()
            last_eval = seen
    evaluate()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "final", safe_serialization=True)
    tok.save_pretrained(out / "final")
    (out / "curve.json").write_text(json.dumps(curve, indent=1))
    return {"final_dir": str(out / "final"), "curve": curve, "steps": step, "questions": seen, "threshold": float(t),
            "train_s": time.monotonic() - t0, "qph": 3600.0 * seen / max(time.monotonic() - t0, 1e-9),
            "loss_last": float(loss.detach()) if step else math.nan}
