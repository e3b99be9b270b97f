"""A quiet sweep's own line per finished trial (Tune's tables only with --verbose)."""
from __future__ import annotations

from softverify.platform.sweep.run import trial_line


def test_trial_line_names_status_steps_and_the_ranking_metric_with_its_interval():
    r = {"step": 3, "training_iteration": 3, "eval_forced/auc_per_gene": 0.5234,
         "eval_forced/auc_per_gene_lo": 0.47, "eval_forced/auc_per_gene_hi": 0.576}
    assert trial_line("run_00001", "finished", r, "eval_forced/auc_per_gene") == (
        "softverify sweep: trial run_00001 finished after 3 steps: eval_forced/auc_per_gene 0.523 [0.470, 0.576]")
    # no interval logged: the value alone; nothing logged (died before its first step): n/a
    assert trial_line("t", "finished", {"step": 2, "eval_forced/auroc": 0.75}, "eval_forced/auroc").endswith(
        "after 2 steps: eval_forced/auroc 0.750")
    assert trial_line("t", "failed", None, "eval_forced/auroc") == "softverify sweep: trial t failed: eval_forced/auroc n/a"
