"""HFEngine(decode="loop"): the fast decode path keeps the behaviour-logprob contract."""
from __future__ import annotations

import numpy as np
import pytest

from softverify.engines.base import SamplingParams
from softverify.engines.hf import HFEngine, _truncated_probs


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFEngine(str(tiny_model_dir), torch_threads=1, batch_size=6, decode="loop")


def _prompts(engine):
    msgs = [[{"role": "user", "content": q}] for q in ("Is TP53 a gene?", "Name a kinase in K562 cells, please.")]
    return engine.render(msgs).token_ids


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (5, 0.9)])
def test_loop_logprobs_equal_teacher_forced(engine, top_k, top_p):
    prompts = _prompts(engine)
    sp = SamplingParams(max_new_tokens=12, temperature=0.7, top_k=top_k, top_p=top_p, seed=3)
    gens = engine.generate(prompts, sp, n=4)  # 8 rows, batch 6: groups of 1 prompt x 4, shared prefill
    assert [len(g) for g in gens] == [4, 4]
    flat_p = [prompts[i] for i in range(2) for _ in range(4)]
    flat = [g for gs in gens for g in gs]
    scored = engine.score(flat_p, [g.token_ids for g in flat], 0.7)
    for g, lp in zip(flat, scored):
        assert 1 <= len(g.token_ids) <= 12 and len(g.logprobs) == len(g.token_ids)
        np.testing.assert_allclose(g.logprobs, lp, atol=1e-4)
    again = engine.generate(prompts, sp, n=4)
    assert [g.token_ids for gs in again for g in gs] == [g.token_ids for g in flat]  # seeded


def test_loop_stops_at_stop_string_and_eos(engine):
    prompts = _prompts(engine)
    sp = SamplingParams(max_new_tokens=20, temperature=1.0, seed=0)
    free = engine.generate(prompts, sp, n=3)
    text = free[0][0].text
    assert text, "the tiny model should produce some text"
    stop = text[len(text) // 2 :][:3] or text
    stopped = engine.generate(prompts, SamplingParams(max_new_tokens=20, temperature=1.0, seed=0, stop=[stop]), n=3)
    g = stopped[0][0]
    assert stop in g.text and g.finish_reason == "stop" and len(g.token_ids) <= len(free[0][0].token_ids)
    for gs in stopped:  # every row ends at EOS, at a stop string, or at the budget
        for x in gs:
            assert x.finish_reason == ("stop" if (x.token_ids[-1] in engine.eos_ids or stop in x.text) else "length")


def test_truncated_probs():
    import torch

    lp = torch.log_softmax(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), -1)
    p = _truncated_probs(lp, 2, 1.0)
    assert p[0, 2] == 0 and p[0, 3] == 0 and abs(float(p.sum()) - 1) < 1e-6
    p = _truncated_probs(lp, 0, 0.5)  # the top token alone has > 0.5 of the mass
    assert p[0, 0] == 1.0
