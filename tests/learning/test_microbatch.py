"""Micro-batch plans: padded-token counts on hand cases, and the same loss and gradient
whichever split the learner takes."""
from __future__ import annotations

import pytest
import torch

from softverify.learner.microbatch import completion_rows, encoded_tokens, length_split, plan_micro_batches, token_counts

# two groups (prompts A: 5 tokens, B: 3 tokens), completions of mixed lengths
A, B = [1, 2, 3, 4, 5], [6, 7, 8]
PROMPTS = [A, A, A, A, B, B, B, B]
COMPS = [[9] * 8, [9], [9], [9], [9] * 8, [9], [9], [9]]


def test_completion_rows_pack_first_fit_by_decreasing_length():
    # capacity = the longest (5); one prompt's completions only; zero-length ones get no row
    assert completion_rows([0, 0, 0, 0, 1, 1], [5, 2, 3, 0, 1, 4]) == [[0], [5, 4], [2, 1]]
    assert completion_rows([0, 0, 0], [2, 2, 2]) == [[0], [1], [2]]  # 2 + 2 > 2: no two share a row
    assert completion_rows([0, 0, 0, 0], [4, 1, 3, 1]) == [[0], [2, 1], [3]]
    assert completion_rows([], []) == [] and completion_rows([0], [0]) == []
    with pytest.raises(ValueError, match="2 owners but 1 lengths"):
        completion_rows([0, 0], [1])


def test_encoded_tokens_by_hand():
    contiguous = [[0, 1, 2, 3], [4, 5, 6, 7]]
    # shared: per micro-batch one prompt, then its completions' inputs (7, 0, 0, 0) packed in one row
    assert encoded_tokens(PROMPTS, COMPS, contiguous, shared_prompt=True) == (5 + 7) + (3 + 7)
    # packed: 4 x (prompt + 8) each
    assert encoded_tokens(PROMPTS, COMPS, contiguous, shared_prompt=False) == 4 * 13 + 4 * 11
    by_len = length_split(PROMPTS, COMPS, 2)
    assert by_len == [[1, 2, 3, 5], [0, 4, 6, 7]]  # 3 short of A + 1 short of B; then the rest
    # shared: mb 1 = prompts A and B (2 x 5), no inputs; mb 2 = A and B again + rows [0] and [4] of width 7
    assert encoded_tokens(PROMPTS, COMPS, by_len, shared_prompt=True) == (2 * 5) + (2 * 5 + 2 * 7)
    assert encoded_tokens(PROMPTS, COMPS, by_len, shared_prompt=False) == 4 * 6 + 4 * 13
    assert encoded_tokens(PROMPTS, COMPS, [[], [0]], shared_prompt=True) == 5 + 7  # empty micro-batches cost 0
    # not padding: each micro-batch's distinct prompts once, every completion input
    assert token_counts(PROMPTS, COMPS, contiguous, True) == (22, 22)
    assert token_counts(PROMPTS, COMPS, by_len, True) == (34, (5 + 3) + (5 + 3 + 7 + 7))
    assert token_counts(PROMPTS, COMPS, contiguous, False) == (96, 4 * 5 + 11 + 4 * 3 + 11)


def test_plan_picks_the_cheaper_split_and_keeps_sizes():
    assert plan_micro_batches(PROMPTS, COMPS, 2, "contiguous", True) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # packed path: sorting by length pads less (76 < 96); shared path: packing already removed
    # the padding, and sorting would encode each prompt twice (34 > 22)
    assert plan_micro_batches(PROMPTS, COMPS, 2, "fewest_tokens", False) == length_split(PROMPTS, COMPS, 2)
    assert plan_micro_batches(PROMPTS, COMPS, 2, "fewest_tokens", True) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    for order in ("contiguous", "length", "fewest_tokens"):
        plan = plan_micro_batches(PROMPTS, COMPS, 3, order, False)
        assert sorted(i for mb in plan for i in mb) == list(range(8)) and sorted(map(len, plan)) == [2, 3, 3]
    assert plan_micro_batches(PROMPTS[:1], COMPS[:1], 3, "length", True) == [[0], [], []]
    with pytest.raises(ValueError, match="micro-batch order 'sorted': expected 'contiguous', 'length' or"):
        plan_micro_batches(PROMPTS, COMPS, 2, "sorted", True)


def test_any_split_gives_the_same_loss_and_gradient(tiny_model_dir):
    """The learner's sampled loss summed over micro-batches, contiguous vs length-sorted:
    equal loss and gradients (global normalisation makes micro-batch losses add up)."""
    from softverify.config import build_config
    from softverify.algo.sampled import sampled_loss
    from softverify.model.loading import load_causal_lm
    from softverify.types import Sample

    model, tok = load_causal_lm(str(tiny_model_dir), "float32")
    cfg = build_config({}, [f"model.path={tiny_model_dir}", "algorithm.estimator=sample", "prompt.style=cot",
                            "algorithm.entropy_coef=0.01"])
    g = torch.Generator().manual_seed(0)
    samples = []
    for p, c in zip(PROMPTS, COMPS):
        c = torch.randint(10, 500, (len(c),), generator=g).tolist()
        samples.append(Sample(prompt_id="", prompt="", completion="", prompt_token_ids=[p_ + 20 for p_ in p],
                              completion_token_ids=c, behaviour_logprobs=[-3.0] * len(c)))
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, 0.0, -1.0, 1.0])
    total_tokens, total_seqs = float(sum(map(len, COMPS))), 8.0

    def run(plan):
        model.zero_grad()
        total = 0.0
        for idx in plan:
            ss = [samples[i] for i in idx]
            loss, *_ = sampled_loss(model, tok, cfg, ss, adv[idx], torch.ones(len(idx)), total_tokens, total_seqs)
            loss.backward()
            total += float(loss.detach())
        return total, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    l1, g1 = run(plan_micro_batches(PROMPTS, COMPS, 2, "contiguous", True))
    l2, g2 = run(plan_micro_batches(PROMPTS, COMPS, 2, "length", True))
    assert l1 == pytest.approx(l2, abs=1e-6)
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], atol=1e-6, rtol=1e-5)


def test_balanced_shards_deal_whole_units_longest_first():
    from softverify.learner.microbatch import balanced_shards

    # 4 groups of 2 costing 10, 9, 2, 1: contiguous halves load the ranks 19 vs 3; balanced 11 vs 11
    costs = [5, 5, 4, 5, 1, 1, 0.5, 0.5]
    assert balanced_shards(costs, 2, 2) == [[0, 1, 6, 7], [2, 3, 4, 5]]
    assert balanced_shards([1] * 6, 2, 2) == [[0, 1, 4, 5], [2, 3]]  # ties: the lower rank
    assert balanced_shards([3, 1, 2], 1, 4) == [[0], [2], [1], []]  # more ranks than units: some idle
    with pytest.raises(ValueError, match="5 samples are not whole units of 2"):
        balanced_shards([1] * 5, 2, 2)
