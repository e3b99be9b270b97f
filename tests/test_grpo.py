"""GRPO math against hand-computed numbers."""
import math

import numpy as np
import pytest
import torch

from softverify.learner import advantages

from softverify.learner import losses as grpo


def test_grpo_advantages_hand_computed():
    # group 0: rewards 1, 0 -> mean .5, std .5 -> +1, -1 ; group 1: 1,1 -> std 0 -> 0, 0
    r = np.array([1.0, 0.0, 1.0, 1.0])
    g = np.array([0, 0, 1, 1])
    adv = advantages.grpo_advantages(r, g, eps=0.0 + 1e-12)
    np.testing.assert_allclose(adv, [1.0, -1.0, 0.0, 0.0], atol=1e-9)


def test_grpo_advantages_three_values():
    r = np.array([0.0, 0.5, 1.0])
    # mean .5, population std sqrt(1/6)=0.408248
    adv = advantages.grpo_advantages(r, np.zeros(3, int), eps=1e-6)
    sd = math.sqrt(((0.5) ** 2 * 2) / 3)
    np.testing.assert_allclose(adv, [-0.5 / (sd + 1e-6), 0.0, 0.5 / (sd + 1e-6)], rtol=1e-9)


def test_drgrpo_has_no_std():
    r = np.array([0.0, 0.5, 1.0, 2.0, 4.0])
    g = np.array([0, 0, 0, 1, 1])
    np.testing.assert_allclose(advantages.drgrpo_advantages(r, g), [-0.5, 0.0, 0.5, -1.0, 1.0])


def test_nan_rewards_get_zero_advantage_and_do_not_shift_mean():
    r = np.array([1.0, np.nan, 0.0])
    adv = advantages.drgrpo_advantages(r, np.zeros(3, int))
    np.testing.assert_allclose(adv, [0.5, 0.0, -0.5])


def test_unknown_estimator():
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        advantages.compute_advantages(np.ones(2), np.zeros(2, int), "ppo")


def test_clipped_surrogate_hand_computed():
    # one sequence, two tokens; A = +1
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.75, 0.55]]))  # ratios 1.5 and 1.1
    mask = torch.ones(1, 2)
    loss, st = grpo.clipped_surrogate(new, old, torch.tensor([1.0]), mask, eps_low=0.2, eps_high=0.28)
    # token 1: min(1.5, 1.28) = 1.28 ; token 2: min(1.1, 1.1) = 1.1 -> loss = -(1.28+1.1)/2
    assert loss.item() == pytest.approx(-(1.28 + 1.1) / 2, abs=1e-6)
    assert st["clip_frac"] == pytest.approx(0.5)
    assert st["ratio_mean"] == pytest.approx(1.3, abs=1e-6)


def test_clipped_surrogate_negative_advantage_uses_low_clip():
    old = torch.log(torch.tensor([[0.5]]))
    new = torch.log(torch.tensor([[0.2]]))  # ratio 0.4 ; A=-1: min(-0.4, -0.8) = -0.8
    loss, st = grpo.clipped_surrogate(new, old, torch.tensor([-1.0]), torch.ones(1, 1), 0.2, 0.28)
    assert loss.item() == pytest.approx(0.8, abs=1e-6)
    assert st["clip_frac"] == 1.0


def test_clipped_surrogate_gradient_zero_when_clipped():
    old = torch.log(torch.tensor([[0.5]]))
    new = torch.log(torch.tensor([[0.9]])).requires_grad_(True)  # ratio 1.8 > 1.28
    loss, _ = grpo.clipped_surrogate(new, old, torch.tensor([1.0]), torch.ones(1, 1), 0.2, 0.28)
    loss.backward()
    assert new.grad.abs().item() == 0.0


def test_aggregation_token_vs_seq_mean():
    v = torch.tensor([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert grpo.masked_aggregate(v, m, "token_mean").item() == pytest.approx(16 / 4)
    assert grpo.masked_aggregate(v, m, "seq_mean").item() == pytest.approx((2.0 + 10.0) / 2)
    # global normaliser: two halves summed equal the whole
    a = grpo.masked_aggregate(v[:1], m[:1], "token_mean", total_tokens=4)
    b = grpo.masked_aggregate(v[1:], m[1:], "token_mean", total_tokens=4)
    assert (a + b).item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        grpo.masked_aggregate(v, m, "sum")


def test_kl_estimators_hand_computed():
    logp = torch.log(torch.tensor([0.5]))
    ref = torch.log(torch.tensor([0.25]))
    assert grpo.kl_k1(logp, ref).item() == pytest.approx(math.log(2))
    # k3 = exp(ref-logp) - (ref-logp) - 1 = 0.5 + ln2 - 1
    assert grpo.kl_k3(logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)
    assert grpo.kl_k3(logp, logp).item() == 0.0
    with pytest.raises(ValueError, match="unknown KL estimator"):
        grpo.kl_penalty(logp, ref, "k2")
