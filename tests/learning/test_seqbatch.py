"""Merged sequences and shared-prompt encoding are exact: same loss and gradients as the
plain path (every prompt + completion encoded in full, every copy kept)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from softverify.learner.losses import clipped_surrogate
from softverify.model.loading import load_causal_lm
from softverify.task.answer import answer_token_start
from softverify.learner.seqbatch import (completion_logprobs_packed, completion_logprobs_shared,
                                         merge_identical, old_logprobs)
from softverify.types import Sample


def _samples(tok):
    p1 = tok("Is a knockdown of TP53 likely to change MYC?<answer>", add_special_tokens=False)["input_ids"]
    p2 = tok("Does GATA1 knockdown change HBG1?<answer>", add_special_tokens=False)["input_ids"]
    yes = tok("yes</answer>", add_special_tokens=False)["input_ids"]
    no = tok("no</answer>", add_special_tokens=False)["input_ids"]
    odd = tok("maybe", add_special_tokens=False)["input_ids"]
    comps = [(p1, yes), (p1, yes), (p1, no), (p1, odd), (p2, no), (p2, no), (p2, no), (p2, yes)]
    rng = np.random.default_rng(0)
    out = []
    for i, (p, c) in enumerate(comps):
        out.append(Sample(prompt_id=str(i), prompt="", completion="", prompt_token_ids=list(p),
                          completion_token_ids=list(c), behaviour_logprobs=list(rng.normal(-2, 0.1, len(c)))))
    adv = np.array([0.5, 0.5, -1.0, 0.2, -0.3, -0.3, -0.3, 0.9])
    return out, adv


def _loss_and_grads(model, fn, samples, adv, weights=None, total_tokens=None):
    model.zero_grad()
    cb = fn(model, [s.prompt_token_ids for s in samples], [s.completion_token_ids for s in samples], 0, 1.0)
    old = old_logprobs(samples, cb.mask.shape[1])
    w = None if weights is None else torch.tensor(weights, dtype=torch.float32)
    loss, _ = clipped_surrogate(cb.logp, old, torch.tensor(adv, dtype=torch.float32), cb.mask, 0.2, 0.28,
                                "token_mean", total_tokens, 8, weights=w)
    loss.backward()
    return float(loss), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}, cb


def test_shared_prompt_and_merging_match_plain_path(tiny_model_dir):
    model, tok = load_causal_lm(str(tiny_model_dir))
    model.config.use_cache = False
    samples, adv = _samples(tok)
    total = sum(len(s.completion_token_ids) for s in samples)
    l0, g0, cb0 = _loss_and_grads(model, completion_logprobs_packed, samples, adv, total_tokens=total)
    l1, g1, cb1 = _loss_and_grads(model, completion_logprobs_shared, samples, adv, total_tokens=total)
    assert torch.allclose(cb0.logp, cb1.logp, atol=1e-5)
    merged, madv, w = merge_identical(samples, adv)
    assert len(merged) == 5 and w.tolist() == [2.0, 1.0, 1.0, 3.0, 1.0]
    l2, g2, _ = _loss_and_grads(model, completion_logprobs_shared, merged, madv, weights=w, total_tokens=total)
    assert abs(l0 - l1) < 1e-5 and abs(l0 - l2) < 1e-5
    for k in g0:
        assert torch.allclose(g0[k], g1[k], atol=1e-5), k
        assert torch.allclose(g0[k], g2[k], atol=1e-5), k


def test_merge_keeps_different_advantages_apart():
    s = Sample(prompt_id="a", prompt="", completion="", prompt_token_ids=[1, 2], completion_token_ids=[3])
    merged, adv, w = merge_identical([s, s, s], np.array([1.0, 1.0, -1.0]))
    assert len(merged) == 2 and adv.tolist() == [1.0, -1.0] and w.tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="3 samples but 2 advantages"):
        merge_identical([s, s, s], np.array([1.0, 1.0]))


def test_weighted_surrogate_hand_computed():
    # two sequences of 1 token, ratio 1: loss_t = -A; weights 2 and 1; token_mean over 3 tokens
    logp = torch.zeros((2, 1))
    loss, _ = clipped_surrogate(logp, logp, torch.tensor([1.0, -2.0]), torch.ones((2, 1)),
                                weights=torch.tensor([2.0, 1.0]))
    assert abs(float(loss) - (-(2 * 1.0) + 2.0) / 3) < 1e-7  # (-2*1 - 1*(-2)) / 3 = 0


def test_answer_token_start(tiny_model_dir):
    _, tok = load_causal_lm(str(tiny_model_dir))
    ids = tok("I think so.\n</think>\n<answer>\nyes\n</answer>", add_special_tokens=False)["input_ids"]
    k = answer_token_start(tok, ids)
    assert tok.decode(ids[k:]).lstrip("\n").startswith("<answer>")
    assert "<answer>" not in tok.decode(ids[:k])
    assert answer_token_start(tok, tok("no tags", add_special_tokens=False)["input_ids"]) is None


def test_packed_completion_rows_match_plain_path_with_entropy(tiny_model_dir):
    """CoT-like lengths (40, 7, 25, 1, 12 tokens under two prompts of different lengths): the
    shared path packs several completions into one row behind a block-causal mask; logprobs,
    entropies and the gradient of an entropy-regularised loss equal the plain path's."""
    from softverify.learner.microbatch import completion_rows

    model, _ = load_causal_lm(str(tiny_model_dir))
    model.config.use_cache = False
    g = torch.Generator().manual_seed(3)
    pa, pb = torch.randint(5, 200, (9,), generator=g).tolist(), torch.randint(5, 200, (4,), generator=g).tolist()
    lens = [40, 7, 25, 1, 12]
    prompts = [pa, pa, pa, pb, pb]
    comps = [torch.randint(5, 200, (n,), generator=g).tolist() for n in lens]
    assert completion_rows([0, 0, 0, 1, 1], [n - 1 for n in lens]) == [[0], [2, 1], [4]]  # a row of two
    out = []
    for fn in (completion_logprobs_packed, completion_logprobs_shared):
        model.zero_grad()
        cb = fn(model, prompts, comps, 0, 0.7, with_entropy=True, entropy_grad=True)
        ((cb.logp * cb.mask).sum() - 0.1 * (cb.entropy * cb.mask).sum()).backward()
        out.append((cb, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}))
    (c0, g0), (c1, g1) = out
    assert torch.equal(c0.mask, c1.mask)
    assert torch.allclose(c0.logp, c1.logp, atol=1e-5) and torch.allclose(c0.entropy, c1.entropy, atol=1e-5)
    assert g0.keys() == g1.keys()
    for k in g0:  # float summation order differs: compare relative to each gradient's scale
        assert torch.allclose(g0[k], g1[k], rtol=0, atol=1e-5 * float(g0[k].abs().max())), k


def test_common_prefix_len_keeps_a_token_for_each_prompt():
    from softverify.model.loading import common_prefix_len

    assert common_prefix_len([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 9]]) == 2
    assert common_prefix_len([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter one keeps its last token
    assert common_prefix_len([[7, 1], [8, 1]]) == 0


@pytest.mark.parametrize("min_shared", [0, 8])
def test_shared_prefix_matches_plain_path_in_logprobs_and_gradients(tiny_model_dir, min_shared):
    """Direct-style prompts: a long shared head (system prompt + template) and questions of
    different lengths (one as long as the longest, one short), two candidate answers each.
    With the head encoded once and its cache repeated (``min_shared=8``) or not at all (0), the
    logprobs, entropies and gradients equal the plain path's; the shared forward sees the
    head once."""
    from softverify.model.loading import common_prefix_len, encode_prompts

    model, _ = load_causal_lm(str(tiny_model_dir))
    model.config.use_cache = False
    g = torch.Generator().manual_seed(5)
    head = torch.randint(5, 200, (20,), generator=g).tolist()
    qs = [torch.randint(5, 200, (n,), generator=g).tolist() for n in (11, 3, 11, 6)]
    prompts = [head + q for q in qs for _ in range(2)]
    comps = [[c, 2] for _ in qs for c in (41, 42)]
    assert common_prefix_len(list(dict.fromkeys(map(tuple, prompts)))) == 20
    seen = []
    hook = model.model.embed_tokens.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    out = []
    for fn in (completion_logprobs_packed, lambda *a, **k: completion_logprobs_shared(*a, **k, min_shared=min_shared)):
        model.zero_grad()
        seen.clear()
        cb = fn(model, prompts, comps, 0, 0.7, with_entropy=True, entropy_grad=True)
        ((cb.logp * cb.mask).sum() - 0.1 * (cb.entropy * cb.mask).sum()).backward()
        out.append((cb, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}, list(seen)))
    hook.remove()
    (c0, g0, _), (c1, g1, shapes) = out
    want = [(1, 20), (4, 11)] if min_shared else [(4, 31)]  # then the completions' packed pass
    assert shapes[:len(want)] == want, shapes
    assert torch.allclose(c0.logp, c1.logp, atol=1e-5), (c0.logp - c1.logp).abs().max()
    assert torch.allclose(c0.entropy, c1.entropy, atol=1e-5)
    assert g0.keys() == g1.keys() and g0
    for k in g0:
        assert torch.allclose(g0[k], g1[k], rtol=0, atol=1e-5 * float(g0[k].abs().max())), k
    out, attn = encode_prompts(model, [head + q for q in qs], 0)
    assert attn.shape == (4, 31) and attn.sum(1).tolist() == [31, 23, 31, 26]
