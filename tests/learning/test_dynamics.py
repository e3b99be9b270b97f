"""Dynamics options, each against hand-computed numbers: dynamic sampling, the balanced
threshold policy, lr schedules, forced-score AUROC."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from softverify.learner.advantages import informative_groups
from softverify.learner.rank import lr_factor
from softverify.evaluation.scores import bootstrap_ci, score_metrics
from softverify.verifiers.balance import balanced_threshold, expected_fixed_rewards, policy_threshold


def test_informative_groups_on_hand_made_groups():
    rewards = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0.5, 0.5, np.nan, np.nan, 0.2, np.nan])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4])
    keep = informative_groups(rewards, groups)
    # group 0 all 1 (no signal), 1 mixed, 2 equal, 3 all NaN, 4 a single finite reward
    assert keep.tolist() == [False] * 4 + [True] * 4 + [False] * 6


def test_balanced_threshold_ties_fixed_answers_on_a_toy_prompt_set():
    p = np.array([0.05, 0.1, 0.1, 0.2, 0.3, 0.9])
    # without a threshold "always no" earns more: mean(p) = 0.275
    yes, no = expected_fixed_rewards(p, None)
    assert yes == pytest.approx(0.275) and no == pytest.approx(0.725)
    t = balanced_threshold(p)
    yes, no = expected_fixed_rewards(p, t)
    assert yes == pytest.approx(0.5, abs=1e-8) and no == pytest.approx(0.5, abs=1e-8)
    # by hand: with t between 0.1 and 0.2 the normalised p are 0.5 p / t for the three
    # below t and 0.5 + 0.5 (p - t) / (1 - t) for 0.2, 0.3 and 0.9; mean = 0.5 at t = 5/37
    # (0.125/t + 1.5 + 0.5 (1.4 - 3t)/(1 - t) = 3  ->  37 t^2 - 42 t + 5 = 0, t in (0.1, 0.2))
    def mean_norm(t):
        lo = [0.5 * x / t for x in p if x < t]
        hi = [0.5 + 0.5 * (x - t) / (1 - t) for x in p if x >= t]
        return np.mean(lo + hi)
    assert mean_norm(t) == pytest.approx(0.5, abs=1e-6) and t == pytest.approx(5 / 37, abs=1e-8)
    # NaN (unknown genes) are ignored; negated questions flip which answer p supports, and
    # a set where no threshold can tie the fixed answers is refused with the gaps named
    assert balanced_threshold(np.array([0.05, 0.1, 0.1, np.nan, 0.2, 0.3, 0.9])) == pytest.approx(t)
    with pytest.raises(ValueError, match="no t in"):
        balanced_threshold(np.array([0.05, 0.1, 0.9]), np.array([False, False, True]))
    assert policy_threshold("median", p) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="unknown threshold policy 'mode'"):
        policy_threshold("mode", p)
    with pytest.raises(ValueError, match="scored none"):
        balanced_threshold(np.array([np.nan]))


def test_lr_schedules_hand_computed():
    assert [lr_factor(k, 4, 10, "constant") for k in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(7, 4, 10, "linear") == pytest.approx(1 - 3 / 6)
    assert lr_factor(7, 4, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(20, 0, 10, "linear") == 0.0
    with pytest.raises(ValueError, match="unknown lr schedule 'step'"):
        lr_factor(0, 0, 10, "step")


def test_forced_score_auroc_hand_made():
    labels = [1, 1, 0, 0, 1, 0]
    scores = [2.0, 0.5, 1.0, -1.0, -0.5, -2.0]
    # positive/negative pairs ranked right: (2>1,-1,-2), (0.5>-1,-2; <1), (-0.5>-1,-2; <1) = 3+2+2 of 9
    m = score_metrics(labels, scores, answers=[1, 1, 1, 0, 0, 0], reference=[6, 5, 4, 3, 2, 1], n_boot=200)
    assert m["auroc"] == pytest.approx(7 / 9)
    assert m["auroc_lo"] <= m["auroc"] <= m["auroc_hi"]
    assert m["spearman_ref"] == pytest.approx(1 - 6 * sum(d * d for d in [0, 1, -1, 1, -1, 0]) / (6 * 35))
    lo, hi = bootstrap_ci(lambda a: float(np.mean(a)), np.ones(10))
    assert lo == hi == 1.0


def test_policy_loss_terms_hand_computed():
    """ratio 1 everywhere, so PG per token = -A: two sequences, 2 and 1 tokens."""
    import torch

    from softverify.learner.losses import policy_loss

    logp = torch.zeros((2, 2))
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    # token_mean over 3 tokens: (-1 - 1 + 2) / 3 = 0
    loss, st = policy_loss(logp, logp, adv, mask)
    assert float(loss) == pytest.approx(0.0) and float(st["pg"]) == pytest.approx(0.0)
    # answer share 0.5, answer span = the last real token of each: seq_mean (-1 + 2) / 2 = 0.5
    am = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    loss, _ = policy_loss(logp, logp, adv, mask, answer_mask=am, answer_share=0.5)
    assert float(loss) == pytest.approx(0.5 * 0.0 + 0.5 * 0.5)
    # entropy bonus: entropies 1, 2 | 3 -> token mean 2; coef 0.1 subtracts 0.2
    ent = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    loss, _ = policy_loss(logp, logp, adv, mask, entropy=ent, entropy_coef=0.1)
    assert float(loss) == pytest.approx(-0.2)
    # KL (k1 = logp - ref): ref = -1 everywhere -> KL 1 per token; coef 0.5 adds 0.5
    loss, st = policy_loss(logp, logp, adv, mask, ref_logp=torch.full((2, 2), -1.0), kl_coef=0.5, kl_estimator="k1")
    assert float(loss) == pytest.approx(0.5) and float(st["kl"]) == pytest.approx(1.0)


def test_verifier_diagnostics_hand_made():
    from softverify.platform.train.diagnostics import verifier_diagnostics
    from softverify.task.answer import flip_answer

    assert flip_answer("<think>x</think><answer> Yes </answer>") == "<think>x</think><answer> No </answer>"
    assert flip_answer("no tag") is None
    answers = np.array([1, 0, 1, -1])
    labels = np.array([1, 0, 0, 1])  # right, right, wrong, unanswered
    scores = np.array([[1.0, 0.9], [1.0, 0.2], [0.0, 0.8], [0.0, np.nan]])
    opposite = np.array([[0.0, 0.1], [0.0, 0.8], [1.0, 0.2], [np.nan, np.nan]])
    d = verifier_diagnostics(["hard", "wm"], scores, answers, labels, opposite, soft=[False, True])
    assert d["diag/corr_label/hard"] == pytest.approx(1.0)
    # wm pays >= .5 on samples 0 (right), 2 (wrong) and < .5 on 1 (right): disagrees on 1 and 2
    assert d["diag/disagree_hard/wm"] == pytest.approx(2 / 3)
    assert d["diag/reward_given/wm"] == pytest.approx((0.9 + 0.2 + 0.8) / 3)
    assert d["diag/reward_opposite/wm"] == pytest.approx((0.1 + 0.8 + 0.2) / 3)
    assert "diag/disagree_hard/hard" not in d


def test_stratified_order_alternates_pools_and_resumes():
    from softverify.data import StratifiedOrder

    pools = [[0, 2, 4], [1, 3, 5, 7, 9]]
    o = StratifiedOrder(pools, seed=3)
    first = o.take(8)
    assert [x % 2 for x in first] == [0, 1] * 4  # every pair of prompts: one from each pool
    assert sorted(first[0::2][:3]) == [0, 2, 4]  # one epoch of the small pool, then it reshuffles
    rest = o.take(6)
    again = StratifiedOrder(pools, seed=3, position=8)
    assert again.take(6) == rest
    with pytest.raises(ValueError, match="two non-empty pools"):
        StratifiedOrder([[1], []], seed=0)


def test_enumerated_loss_gradients_hand_computed():
    """Two candidates with q = (0.75, 0.25), rewards (1, 0): A = r - E_q[r] = (0.25, -0.75).
    d loss / d s_b = -q_b A_b, so drgrpo gives (-0.1875, 0.1875); grpo divides A by the
    reward's std under q, sqrt(0.1875), giving -/+ sqrt(q(1-q)) = -/+0.4330."""
    from softverify.learner.losses import enumerated_loss

    base = torch.log(torch.tensor([0.6, 0.2, 0.5, 0.5]))  # second prompt: q = (0.5, 0.5)
    rewards = torch.tensor([1.0, 0.0, 0.3, 0.3])  # second prompt: no reward gap, no gradient
    groups = torch.tensor([0, 0, 1, 1])
    for adv, expect in (("drgrpo", 0.1875), ("grpo", 0.1875 / 0.1875**0.5)):
        s = base.clone().requires_grad_(True)
        loss, st = enumerated_loss(s, rewards, groups, advantage=adv, total_groups=2)
        loss.backward()
        assert torch.allclose(s.grad, torch.tensor([-expect, expect, 0.0, 0.0]) / 2, atol=1e-6), (adv, s.grad)
        h0 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
        assert float(st["entropy"]) == pytest.approx((h0 + math.log(2)) / 2, abs=1e-6)
        assert float(st["expected_reward"]) == pytest.approx((0.75 + 0.3) / 2, abs=1e-6)
    # entropy bonus: d(-c H)/d s_b = c q_b (log q_b + H); KL to an identical reference: 0 and no gradient
    s = base.clone().requires_grad_(True)
    loss, st = enumerated_loss(s, torch.zeros(4), groups, advantage="drgrpo", total_groups=2, entropy_coef=0.5,
                               ref_seq_logp=base.clone(), kl_coef=1.0)
    loss.backward()
    q = torch.tensor([0.75, 0.25, 0.5, 0.5])
    H = torch.tensor([h0, h0, math.log(2), math.log(2)])
    assert torch.allclose(s.grad, 0.5 * q * (torch.log(q) + H) / 2, atol=1e-6)
    assert float(st["kl"]) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="equal-length"):
        enumerated_loss(base, rewards[:3], groups)
    with pytest.raises(ValueError, match="unknown advantage 'ppo'"):
        enumerated_loss(base, rewards, groups, advantage="ppo")


def test_enumerate_estimator_config_checks():
    from softverify.config import ConfigError, build_config

    cfg = build_config({}, ["algorithm.estimator=enumerate", "rollout.prompts_per_step=4"])
    assert cfg.samples_per_prompt == 2 and cfg.algorithm.answer_candidates == ["yes", "no"]
    cot = build_config({}, ["algorithm.estimator=enumerate", "prompt.style=cot", "rollout.group_size=3"])
    assert cot.samples_per_prompt == 6  # 3 reasonings x {yes, no}
    with pytest.raises(ConfigError, match="set rollout.force_answer=false"):
        build_config({}, ["algorithm.estimator=enumerate", "prompt.style=cot", "rollout.force_answer=true"])
    with pytest.raises(ConfigError, match="rollout.stop is empty"):
        build_config({}, ["algorithm.estimator=enumerate", "prompt.style=cot", "rollout.stop=[]"])
    with pytest.raises(ConfigError, match="at least 2 distinct"):
        build_config({}, ["algorithm.estimator=enumerate", "algorithm.answer_candidates=['yes', 'yes']"])
    with pytest.raises(ConfigError, match="quote them"):
        build_config({}, ["algorithm.answer_candidates=[yes, no]"])
