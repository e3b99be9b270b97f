"""The RolloutEngine Protocol is the whole engine contract, and both engines meet it."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from softverify.engines.base import RolloutEngine


def _members(proto) -> list[str]:
    return [n for n, v in vars(proto).items() if callable(v) and not n.startswith("_")]


def test_hf_engine_meets_the_protocol_and_next_token_logprobs_match_score(tiny_model_dir):
    from softverify.engines.hf import HFEngine

    eng = HFEngine(str(tiny_model_dir), torch_threads=1, batch_size=2)
    assert isinstance(eng, RolloutEngine)
    ctx = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]  # 3 contexts over 2 batches, ragged: left padding matters
    cands = [10, 11, 12]
    got = np.array(eng.next_token_logprobs(ctx, cands))
    want = np.array([[eng.score([c], [[t]], 1.0)[0][0] for t in cands] for c in ctx])
    assert got.shape == (3, 3)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # direct-style evals: contexts behind one long shared header (system prompt + chat template);
    # its cache is shared by the batch, the answer the same as scoring each context in full
    head = list(range(20, 40))
    ctx = [head + [1, 2, 3], head + [4, 5], head + [6, 7, 8, 9], head + [3]]
    got = np.array(eng.next_token_logprobs(ctx, cands))
    eng.shared_prefix = False
    plain = np.array(eng.next_token_logprobs(ctx, cands))
    np.testing.assert_allclose(got, plain, atol=1e-5)
    np.testing.assert_allclose(plain, [[eng.score([c], [[t]], 1.0)[0][0] for t in cands] for c in ctx], atol=1e-5)


def test_vllm_engine_defines_every_protocol_member_with_the_same_parameters():
    """vLLM cannot run without a GPU; its class still has to match the contract."""
    pytest.importorskip("torch")
    from softverify.engines.vllm_engine import VLLMEngine

    for name in _members(RolloutEngine):
        impl = getattr(VLLMEngine, name, None)
        assert impl is not None, f"VLLMEngine lacks {name}"
        want = list(inspect.signature(getattr(RolloutEngine, name)).parameters)
        assert list(inspect.signature(impl).parameters) == want, name
    assert "eos_ids" in inspect.getsource(VLLMEngine.__init__)
