"""The Goodhart monitor and the per-gene reading of eval records."""
from __future__ import annotations

import pytest

from softverify.evaluation.run import per_gene_metrics
from softverify.platform.train.diagnostics import GoodhartMonitor


def _feed(mon: GoodhartMonitor, evals):
    out = []
    for step, (rewards, auc) in enumerate(evals, start=1):
        for r in rewards:
            mon.add_reward(r)
        out.append(mon.update(step * 10, auc))
    return out


def test_warns_only_when_reward_rises_while_per_gene_auroc_falls_for_a_window():
    got = _feed(GoodhartMonitor(window=3), [([0.5, 0.52], 0.55), ([0.6], 0.53), ([0.7, None], 0.51)])
    assert got[:2] == [None, None]
    assert got[2].startswith("Goodhart warning: from step 10 to 30 the teacher's reward rose 0.510 -> 0.700")
    assert "per-gene AUROC fell 0.550 -> 0.510" in got[2]
    # both rising (the student learns what the teacher knows): silent
    assert _feed(GoodhartMonitor(window=3), [([0.5], 0.5), ([0.6], 0.52), ([0.7], 0.55)]) == [None] * 3
    # one flat interval breaks the run of evidence
    assert _feed(GoodhartMonitor(window=3), [([0.5], 0.55), ([0.5], 0.53), ([0.7], 0.51)]) == [None] * 3
    # an eval without a per-gene number is skipped, not counted
    assert _feed(GoodhartMonitor(window=2), [([0.5], None), ([0.6], float("nan"))]) == [None, None]
    with pytest.raises(ValueError, match="window must be >= 2"):
        GoodhartMonitor(window=1)


def test_per_gene_metrics_read_negated_questions_on_the_de_scale():
    # gene G: DE pair P1 (label 1), non-DE pair P2. P1 is asked plainly, P2 negated ("unchanged?"),
    # whose correct answer is then yes (label 1) and a high margin means "not DE".
    recs = [{"gene": "G", "label": 1, "margin": 2.0, "negated": False, "wm_p": 0.8},
            {"gene": "G", "label": 1, "margin": 1.0, "negated": True, "wm_p": 0.9}]
    m = per_gene_metrics(recs, n_boot=50)
    # DE scores: P1 2.0 (DE), P2 -1.0 (not DE): perfectly ranked
    assert m["auc_per_gene"] == 1.0 and m["auc_per_gene_genes"] == 1
    # the teacher: p(DE) 0.8 for P1, 1 - 0.9 = 0.1 for P2
    assert m["teacher_auc_per_gene"] == 1.0


def test_a_run_that_trains_no_question_stops_with_a_reason():
    from types import SimpleNamespace

    from softverify.platform.train.trainer import IdleRunError, Trainer

    t = SimpleNamespace(cfg=SimpleNamespace(trainer=SimpleNamespace(stop_after_idle_steps=3)), step=0, _idle_steps=0)
    idle = {"questions_trained": 0, "dynamic/zero_var_group_frac": 1.0, "reward_mean": 0.0, "response_len_mean": 96}
    for step, m in enumerate([idle, idle, {"questions_trained": 4}, idle, idle], start=1):
        t.step = step
        Trainer._check_idle(t, m)  # a trained step resets the count
    t.step = 6
    with pytest.raises(IdleRunError, match=r"no question trained in the last 3 steps \(steps 4-6; zero-variance "
                                           r"groups 100%.*rollout.stop"):
        Trainer._check_idle(t, idle)
    t.cfg.trainer.stop_after_idle_steps = 0  # off
    for _ in range(5):
        Trainer._check_idle(t, idle)
