"""The step's logged numbers from hand-made rounds (no Ray): what the trainer reports."""
import numpy as np

from softverify.platform.train.pipeline import Round
from softverify.platform.train.step_metrics import StepTimes, step_metrics, verifier_metrics


def _round(rewards, adv, lengths, rollout_s, verify_s):
    r = Round(None, np.array([0, 0]), 0, rollout_s=rollout_s, verify_s=verify_s)
    r.rewards, r.adv, r.lengths = np.array(rewards), np.array(adv), np.array(lengths)
    r.summ = {"stopped": [True] * len(rewards), "forced": [False, True], "answers": [1, -1]}
    return r


def test_step_metrics_by_hand():
    rounds = [_round([1.0, 0.0], [0.5, -0.5], [4, 6], 2.0, 0.5), _round([np.nan, 1.0], [0.0, 0.0], [3, 3], 1.0, 0.5)]
    t = StepTimes(start=10.0, learn_start=13.0, overlap_end=13.5, learn_end=15.0, end=16.0, sync_s=0.75)
    m = step_metrics(rounds, t, kept=1, seen=2, zero_var=1, trained_lengths=np.array([4, 6]), lag=0, sync_bytes=8,
                     sync_bytes_total=16, questions_trained_total=7, data_position=4, force_answer=True)
    assert m["reward_mean"] == 2 / 3 and m["adv_abs_max"] == 0.5 and m["response_len_max"] == 6
    assert m["time/rollout_s"] == 3.0 and m["time/verify_s"] == 1.0 and m["time/learn_s"] == 2.0
    assert m["time/step_s"] == 6.0 and m["time/wait_rollout_s"] == 3.0 and m["time/overlap_s"] == 0.5
    assert m["throughput/rollout_tok_s"] == 16 / 3 and m["throughput/learn_tok_s"] == 5.0
    assert m["throughput/questions_per_hour"] == 1200.0 and m["dynamic/zero_var_group_frac"] == 0.5
    assert m["dynamic/refill_rounds"] == 1 and m["questions_trained_total"] == 7 and m["sync/bytes"] == 8
    assert m["rollout/forced_frac"] == 0.5 and m["rollout/unanswered_frac"] == 0.5
    assert "rollout/forced_frac" not in step_metrics(rounds, t, kept=1, seen=2, zero_var=1,
                                                     trained_lengths=np.array([4]), lag=0, sync_bytes=0,
                                                     sync_bytes_total=0, questions_trained_total=0,
                                                     data_position=0, force_answer=False)


def test_verifier_metrics_skip_abstentions():
    scores = np.array([[1.0, np.nan], [0.0, np.nan], [1.0, 0.4]])
    m = verifier_metrics(["hard", "wm"], scores)
    assert m["reward/hard"] == 2 / 3 and m["abstain/hard"] == 0.0
    assert m["reward/wm"] == 0.4 and m["reward_std/wm"] == 0.0 and np.isclose(m["abstain/wm"], 2 / 3)
    assert verifier_metrics(["x"], np.array([[np.nan]])) == {"reward/x": None, "reward_std/x": None, "abstain/x": 1.0}
