"""The rollout engine's CPU decode kernels: oneDNN-prepacked linears, the reserved KV cache
and inverse-CDF sampling each give what the plain HF/torch path gives."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from softverify.engines import packed_linear
from softverify.engines.base import SamplingParams
from softverify.engines.hf import HFEngine, sample_rows
from softverify.engines.kvcache import ReservedLayer, reserved_cache

needs_onednn = pytest.mark.skipif(not packed_linear.available(), reason="torch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("rows", [1, 5, 8, 33])
def test_packed_linear_matches_f_linear(rows):
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(48, 80), torch.nn.Linear(80, 16, bias=False))
    x = torch.randn(rows, 3, 48)
    with torch.no_grad():
        want = lin(x)
        assert packed_linear.prepack_linears(lin) == 2
        assert all(type(m) is packed_linear.PackedLinear for m in lin)
        got = lin(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_packed_linear_never_uses_a_stale_copy():
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 24)
    packed_linear.prepack_linears(lin)
    x = torch.randn(4, 32)
    new = {"weight": torch.randn(24, 32), "bias": torch.randn(24)}
    with torch.no_grad():
        lin.load_state_dict(new)  # in-place copy_, as a weight sync does
        torch.testing.assert_close(lin(x), F.linear(x, new["weight"], new["bias"]), rtol=1e-5, atol=1e-5)
        lin.weight.data = torch.zeros(24, 32)  # a new tensor altogether
        torch.testing.assert_close(lin(x), new["bias"].expand(4, 24), rtol=0, atol=0)


@needs_onednn
def test_packed_linear_trains_through_the_plain_path():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 3)
    packed_linear.prepack_linears(lin)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    x = torch.randn(5, 8)
    lin(x).pow(2).sum().backward()  # grad enabled: F.linear, gradients flow
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)


def test_reserved_layer_matches_dynamic_cache(tiny_model_dir):
    from transformers import DynamicCache

    from softverify.model.loading import load_causal_lm

    model, _ = load_causal_lm(str(tiny_model_dir))
    model.eval()
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (2, 7))
    steps = torch.randint(0, model.config.vocab_size, (6, 6, 1))
    # capacity 9 < 7 + 6 positions: the reserved cache must grow once and stay exact
    caches = [DynamicCache(config=model.config), reserved_cache(model.config, 9)]
    assert all(type(layer) is ReservedLayer for layer in caches[1].layers)
    outs = []
    with torch.no_grad():
        for cache in caches:
            logits = [model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]]
            cache.batch_repeat_interleave(3)  # 2 prompts x 3 samples, as the decode loop does
            for t in range(6):
                if t == 3:
                    cache.batch_select_indices(torch.tensor([0, 2, 3, 5]))  # finished rows leave
                rows = 6 if t < 3 else 4
                tok = steps[t, :rows]
                logits.append(model(input_ids=tok, past_key_values=cache, use_cache=True).logits[:, -1])
            outs.append(logits)
            assert cache.get_seq_length() == 7 + 6
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_reserved_layer_rejects_a_bad_capacity():
    with pytest.raises(ValueError, match="capacity must be >= 1 position, got 0"):
        ReservedLayer(0)


def test_sample_rows_draws_from_the_distribution():
    torch.manual_seed(0)
    p = torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0])
    draws = sample_rows(p.expand(40_000, 5).clone())
    counts = torch.bincount(draws, minlength=5).double() / 40_000
    assert counts[1] == 0 and counts[4] == 0  # zero-probability tokens are never drawn
    np.testing.assert_allclose(counts.numpy(), p.numpy(), atol=0.01)
    unnormalised = sample_rows(torch.tensor([[0.0, 0.0, 3.0], [2.0, 0.0, 0.0]]))
    assert unnormalised.tolist() == [2, 0]


@needs_onednn
def test_prepacked_engine_samples_what_the_plain_engine_scores(tiny_model_dir):
    """Behaviour logprobs of the packed, reserved-cache decode equal the plain (unpacked)
    engine's teacher-forced logprobs of the same tokens, before and after a weight sync."""
    fast = HFEngine(str(tiny_model_dir), torch_threads=1, batch_size=8, decode="loop")
    plain = HFEngine(str(tiny_model_dir), torch_threads=1, batch_size=8, decode="loop", prepack=False)
    assert fast.packed > 0 and plain.packed == 0
    prompts = fast.render([[{"role": "user", "content": "Is TP53 a gene?"}], [{"role": "user", "content": "Hi"}]])
    sp = SamplingParams(max_new_tokens=10, temperature=0.8, seed=1)
    for sync in (False, True):
        if sync:
            torch.manual_seed(5)
            state = {k: v + 0.05 * torch.randn_like(v) for k, v in plain.model.state_dict().items()}
            fast.load_weights(state)
            plain.load_weights(state)
        gens = [g for gs in fast.generate(prompts.token_ids, sp, n=3) for g in gs]
        flat_p = [p for p in prompts.token_ids for _ in range(3)]
        scored = plain.score(flat_p, [g.token_ids for g in gens], 0.8)
        for g, lp in zip(gens, scored):
            np.testing.assert_allclose(g.logprobs, lp, atol=1e-4)
