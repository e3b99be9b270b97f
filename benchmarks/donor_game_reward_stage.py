"""One GRPO step's reward stage on donor-game prompts, in-process (no Ray): SmolLM2 samples
G=8 completions per prompt (assistant turn starts with 'Answer:'), the donor_game verifier
scores them, softverify.learner.losses turns them into group advantages.

    softverify donor-game prompts -n 32 -o /work/runs/dg_prompts.jsonl
    python benchmarks/donor_game_reward_stage.py
"""
import json, time
import numpy as np
from softverify.engines.hf import HFEngine
from softverify.engines.base import SamplingParams
from softverify.model.names import resolve_model_path
from softverify.task.prompts import row_messages
from softverify.types import Sample
from softverify.verifiers import build_verifier
from softverify.learner.advantages import compute_advantages

rows = [json.loads(l) for l in open("/work/runs/dg_prompts.jsonl")][:4]
eng = HFEngine(resolve_model_path("smollm2"), torch_threads=1, batch_size=16)
pb = eng.render([row_messages(r) for r in rows])
ids = [eng.tokenizer(t + "Answer:", add_special_tokens=False)["input_ids"] for t in pb.texts]
t = time.time()
gens = eng.generate(ids, SamplingParams(max_new_tokens=6, temperature=1.0, stop=["\n"], seed=0), n=8)
print("generate_s", round(time.time() - t, 1))
samples = [Sample(r["prompt_id"], pb.texts[i], "Answer:" + g.text, {k: r[k] for k in ("task", "donor_resources")}, group=i)
           for i, r in enumerate(rows) for g in gens[i]]
v = build_verifier("donor_game", objective="own", co_players="reciprocal")
s = v.score(samples)
adv = compute_advantages(s, np.array([x.group for x in samples]), "grpo")
for i in range(len(rows)):
    blk = slice(8 * i, 8 * i + 8)
    print(i, "res", rows[i]["donor_resources"], [x.completion.strip()[:14] for x in samples[blk]])
    print("   reward", np.round(s[blk], 3).tolist(), "adv", np.round(adv[blk], 2).tolist())
print("valid", float(np.mean(s > 0)), "mean_reward", float(np.mean(s)), "groups_with_signal",
      int(sum(np.std(s[8*i:8*i+8]) > 0 for i in range(len(rows)))))
