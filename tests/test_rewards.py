"""Reward composition against hand-computed numbers."""
import numpy as np
import pytest

from softverify.rewards import compose, threshold_normalize, weighted_mean_available


def test_threshold_normalize_hand_computed():
    s = np.array([0.0, 0.1, 0.2, 0.6, 1.0, np.nan])
    out = threshold_normalize(s, 0.2)
    np.testing.assert_allclose(out[:5], [0.0, 0.25, 0.5, 0.75, 1.0])
    assert np.isnan(out[5])
    np.testing.assert_allclose(threshold_normalize(s[:5], None), s[:5])
    with pytest.raises(ValueError, match="threshold 1.5"):
        threshold_normalize(s, 1.5)


def test_weighted_mean_excludes_abstentions_and_zero_weights():
    s = np.array([[1.0, 0.0, 1.0], [np.nan, 0.5, 0.0], [np.nan, np.nan, 1.0]])
    w = np.array([2.0, 1.0, 0.0])
    out = weighted_mean_available(s, w)
    np.testing.assert_allclose(out[:2], [2 / 3, 0.5])
    assert np.isnan(out[2])  # only a weight-0 verifier scored it


def test_compose_sum_then_normalize():
    scores = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    r, a = compose(scores, [1.0, 1.0], [None, None], np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(r, [1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(a, [1.0, -1.0, 1.0, -1.0], atol=1e-5)


def test_compose_gdpo_balances_scales():
    # verifier 0 varies by 1.0, verifier 1 by 0.02; GDPO gives both equal say
    scores = np.array([[1.0, 0.50], [0.0, 0.52]])
    g = np.array([0, 0])
    _, a_sum = compose(scores, [1.0, 1.0], [None, None], g, "sum_then_normalize")
    _, a_gdpo = compose(scores, [1.0, 1.0], [None, None], g, "normalize_then_sum")
    assert a_sum[0] > 0  # the big-range verifier dominates
    np.testing.assert_allclose(a_gdpo, [0.0, 0.0], atol=1e-3)  # +1-1 and -1+1 cancel (up to the std eps)
    with pytest.raises(ValueError, match="unknown aggregation"):
        compose(scores, [1, 1], [None, None], g, "max")


def test_enumerated_learner_values_follow_the_aggregation():
    """Two candidates (yes, no) of one question: hard says yes (1 / 0), a soft verifier with a
    small range leans no (0.45 / 0.55). Summed, yes wins (0.725 vs 0.275 at equal weights);
    normalised per verifier first (GDPO), the two verifiers cancel: no preference."""
    from softverify.algo import mode_class
    from softverify.config import TrainConfig

    def learner_values(rewards, adv, estimator, aggregation):  # what the trainer asks the run's mode for
        cfg = TrainConfig(algorithm={"estimator": estimator}, reward={"aggregation": aggregation})
        return mode_class(estimator, cfg.prompt.style)(cfg).learner_values(rewards, adv)

    scores = np.array([[1.0, 0.45], [0.0, 0.55]])
    g = np.array([0, 0])
    r_sum, a_sum = compose(scores, [1.0, 1.0], [None, None], g, "sum_then_normalize")
    r_gd, a_gd = compose(scores, [1.0, 1.0], [None, None], g, "normalize_then_sum")
    np.testing.assert_allclose(r_sum, [0.725, 0.275])
    np.testing.assert_allclose(learner_values(r_sum, a_sum, "enumerate", "sum_then_normalize"), [0.725, 0.275])
    gd = learner_values(r_gd, a_gd, "enumerate", "normalize_then_sum")
    np.testing.assert_allclose(gd, [0.0, 0.0], atol=1e-4)  # +1 - 1 for yes, -1 + 1 for no (std eps aside)
    assert not np.allclose(gd - gd.mean(), r_sum - r_sum.mean())  # the aggregation changes what is learned
    np.testing.assert_array_equal(learner_values(r_sum, a_sum, "sample", "sum_then_normalize"), a_sum)
