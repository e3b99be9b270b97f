"""learner.mixed_precision='bf16': a rank's forward and backward run in bf16 (torch.autocast) over
fp32 master weights, and its update follows the fp32 one. Two real Learners (DeepSpeed, one rank
each, one process) from the same tiny random model train on the same batch, one per precision."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CODE = """
import json, sys, torch
import numpy as np
from softverify.infra.cluster import free_port
from softverify.config import build_config
from softverify.learner.rank import LearnBatch, Learner
from softverify.types import Sample
port = free_port()
def learner(mp):
    cfg = build_config({{"model": {{"path": {model!r}}}, "learner": {{"num_ranks": 1, "mixed_precision": mp,
                        "lr": 1e-3, "lr_warmup_steps": 0, "train_layers": None}},
                        "algorithm": {{"estimator": "sample"}}}}, [])
    return Learner(cfg, {model!r}, master_port=port)
g = torch.Generator().manual_seed(0)
ss = [Sample("p", "q", str(i), {{}}, prompt_token_ids=torch.randint(10, 4000, (12,), generator=g).tolist(),
             completion_token_ids=torch.randint(10, 4000, (n,), generator=g).tolist(), behaviour_logprobs=[-10.5] * n)
      for i, n in enumerate([7, 5, 9, 3])]
batch = LearnBatch(ss, np.array([1.0, -1.0, 0.5, -0.5]), 24, 4)
out = {{}}
for mp in ("no", "bf16"):
    lr = learner(mp)
    seen = set()
    lin = lr.engine.module.model.layers[0].mlp.down_proj
    hook = lin.register_forward_hook(lambda m, i, o: seen.add(str(o.dtype)))
    before = {{k: v.detach().clone() for k, v in lr.engine.module.named_parameters()}}
    logp = lr.logprobs(ss)
    m = lr.train_step(batch)
    hook.remove()
    after = dict(lr.engine.module.named_parameters())
    delta = torch.cat([(after[k].detach() - before[k]).flatten() for k in before])
    out[mp] = {{"linear_dtypes": sorted(seen), "param_dtypes": sorted({{str(p.dtype) for p in after.values()}}),
               "state_dtypes": sorted({{str(t.dtype) for s in lr.optimizer.state.values() for t in s.values()
                                       if torch.is_tensor(t) and t.is_floating_point() and t.dim()}}),
               "logp": [x for row in logp for x in row], "grad_norm": m["grad_norm"], "pg_loss": m["pg_loss_sum"]}}
    torch.save(delta, {delta!r} + mp)
print("RESULT", json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    import torch

    tmp = tmp_path_factory.mktemp("mp")
    code = CODE.format(model=str(tiny_model_dir), delta=str(tmp / "delta_"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    return res, {mp: torch.load(tmp / f"delta_{mp}") for mp in ("no", "bf16")}


def test_bf16_autocast_computes_in_bf16_and_keeps_fp32_master_state(runs):
    res, _ = runs
    assert res["no"]["linear_dtypes"] == ["torch.float32"]
    assert res["bf16"]["linear_dtypes"] == ["torch.bfloat16"]  # the teacher-forced pass and the training forward
    for mp in ("no", "bf16"):  # weights, and Adam's moments, stay fp32 either way
        assert res[mp]["param_dtypes"] == ["torch.float32"]
        assert res[mp]["state_dtypes"] == ["torch.float32"]


def test_bf16_logprobs_and_update_follow_the_fp32_ones(runs):
    import numpy as np
    import torch

    res, delta = runs
    gap = np.abs(np.array(res["bf16"]["logp"]) - np.array(res["no"]["logp"]))
    assert 0 < gap.max() < 0.05, gap.max()  # bf16 rounding, not a different policy
    assert res["bf16"]["grad_norm"] == pytest.approx(res["no"]["grad_norm"], rel=0.05)
    assert res["bf16"]["pg_loss"] == pytest.approx(res["no"]["pg_loss"], rel=0.05, abs=1e-4)
    cos = float(torch.nn.functional.cosine_similarity(delta["bf16"], delta["no"], dim=0))
    assert delta["bf16"].abs().max() > 0 and cos > 0.9, cos  # the same step, up to bf16 rounding


def test_mixed_precision_needs_fp32_master_weights():
    from softverify.config import build_config

    with pytest.raises(ValueError, match="mixed_precision='bf16'.*model.dtype='bfloat16'"):
        build_config({}, ["learner.mixed_precision=bf16", "model.dtype=bfloat16"])
    with pytest.raises(ValueError, match="mixed_precision"):
        build_config({}, ["learner.mixed_precision=fp16"])
