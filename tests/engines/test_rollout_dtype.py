"""rollout.dtype: a bf16 rollout engine beside an fp32 learner (the peers' split)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from softverify.actors.rollout import make_engine
from softverify.config import ModelConfig, RolloutConfig
from softverify.engines.base import SamplingParams
from softverify.engines.hf import HFEngine


def test_bf16_rollout_engine_takes_fp32_syncs_and_reports_its_own_logprobs(tiny_model_dir):
    rc = RolloutConfig(dtype="bfloat16", hf_decode="loop", torch_threads=1, batch_size=8)
    fast = make_engine(str(tiny_model_dir), ModelConfig(), rc)
    assert {p.dtype for p in fast.model.parameters()} == {torch.bfloat16}
    learner = HFEngine(str(tiny_model_dir), torch_threads=1, decode="loop", prepack=False)  # fp32 reference
    torch.manual_seed(0)
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in learner.model.state_dict().items()
             if k != "lm_head.weight"}  # tied to the embedding: the learner never sends it
    fast.load_weights(state)  # fp32 sync, cast on load
    learner.load_weights(state)
    for k, p in fast.model.state_dict().items():
        if k in state:
            assert torch.equal(p, state[k].to(torch.bfloat16)), k
    prompts = fast.render([[{"role": "user", "content": "Is TP53 a gene?"}]]).token_ids
    sp = SamplingParams(max_new_tokens=12, temperature=1.0, seed=2)
    gens = fast.generate(prompts, sp, n=4)[0]
    own = fast.score([prompts[0]] * 4, [g.token_ids for g in gens], 1.0)
    fp32 = learner.score([prompts[0]] * 4, [g.token_ids for g in gens], 1.0)
    gap = []
    for g, o, f in zip(gens, own, fp32):
        np.testing.assert_allclose(g.logprobs, o, atol=0.05)  # behaviour logprobs = the bf16 policy's
        gap += [abs(a - b) for a, b in zip(g.logprobs, f)]
    assert 0 < float(np.mean(gap)) < 0.2  # a precision gap the importance ratio sees, not a different policy


def test_rollout_dtype_is_validated():
    with pytest.raises(ValueError, match="dtype"):
        RolloutConfig(dtype="float8")
    assert RolloutConfig().dtype is None  # default: the model's dtype
