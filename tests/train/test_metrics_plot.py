"""metrics.png says which run it shows and never puts half-steps on the axis."""
from __future__ import annotations

import json

from softverify.platform.train.metrics import metrics_figure, plot_metrics


def test_one_step_run_plot_has_a_title_and_whole_step_ticks(tmp_path):
    run = tmp_path / "k562_direct"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward_mean": 0.5, "eval_forced/auroc": 0.61,
                                                   "eval_forced/auroc_lo": 0.5, "eval_forced/auroc_hi": 0.7}) + "\n")
    fig = metrics_figure([json.loads((run / "metrics.jsonl").read_text())], None, "k562_direct: smollm2")
    assert fig._suptitle.get_text() == "k562_direct: smollm2 - steps 1-1"
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert {ax.get_title() for ax in panels} == {"eval_forced/auroc", "reward_mean"}
    for ax in panels:
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    out = plot_metrics(run / "metrics.jsonl", run / "metrics.png")  # default title: the run directory
    assert out.stat().st_size > 5_000


def test_resume_drops_the_lines_of_steps_after_the_checkpoint(tmp_path):
    """A run killed after logging step 3 but before checkpointing it resumes from step 2 and
    logs step 3 again: the first step-3 lines must go (samples.jsonl and metrics.jsonl)."""
    from softverify.platform.train.metrics import MetricsLogger, drop_steps_after

    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"step": s, "prompt_id": f"q-{s}"}) + "\n" for s in (1, 1, 2, 3, 3)))
    drop_steps_after(samples, 2)
    assert [json.loads(l)["step"] for l in samples.read_text().splitlines()] == [1, 1, 2]
    drop_steps_after(tmp_path / "absent.jsonl", 2)  # nothing to drop, nothing created
    assert not (tmp_path / "absent.jsonl").exists()

    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)))
    log = MetricsLogger(tmp_path, truncate_after_step=2)
    log.log(3, {"loss": 0.5})
    log.close()
    assert [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_flat_panels_are_dropped_and_named_under_the_grid(tmp_path):
    """The enumerated estimator's reward_mean and a fixed lr are constant by construction:
    no panel for them, a line naming them with their value; what moves keeps its panel and
    leads the grid. A single eval point is not "flat"."""
    from softverify.platform.train.metrics import flat_keys

    rows = [{"step": s, "reward_mean": 0.6, "lr": 1e-5, "reward/hard": 0.5, "policy_expected_reward": 0.5 + 0.01 * s,
             "entropy": 0.69 - 0.01 * s, "time/step_s": 4.0 + s} for s in (1, 2, 3)]
    rows[-1].update({"eval_forced/auc_per_gene": 0.52, "eval_forced/auc_per_gene_lo": 0.45,
                     "eval_forced/auc_per_gene_hi": 0.6})
    assert flat_keys(rows, ["reward_mean", "lr", "reward/hard", "entropy", "eval_forced/auc_per_gene"]) == \
        ["reward_mean", "lr", "reward/hard"]
    fig = metrics_figure(rows, None, "run")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:2] == ["policy_expected_reward", "eval_forced/auc_per_gene"]
    assert set(titles) == {"policy_expected_reward", "eval_forced/auc_per_gene", "entropy", "time/step_s"}
    assert fig.dropped_flat == ["reward/hard", "reward_mean", "lr"]
    notes = [t.get_text() for t in fig.texts]
    assert any(n.startswith("flat, not drawn: reward/hard = 0.5, reward_mean = 0.6, lr = 1e-05") for n in notes), notes

    # every series flat: the panels stay (an empty figure would say less), no note
    fig = metrics_figure([{"step": s, "reward_mean": 0.6, "lr": 1e-5} for s in (1, 2)], None, "run")
    assert {ax.get_title() for ax in fig.axes if ax.get_title()} == {"reward_mean", "lr"} and not fig.dropped_flat
    # keys asked for by name are all drawn, flat or not
    fig = metrics_figure(rows, ["reward_mean", "entropy"], "run")
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["reward_mean", "entropy"]


def test_progress_bar_leads_with_what_moves():
    from softverify.platform.train.metrics import progress_postfix

    m = {"reward_mean": 0.6, "policy_expected_reward": 0.5123, "response_len_mean": 4.0, "time/step_s": 3.21}
    ev = {"eval_forced/auc_per_gene": 0.5234, "eval_forced/auc_per_gene_lo": 0.471, "eval_forced/auc_per_gene_hi": 0.576,
          "eval_forced/auroc": 0.61}
    assert list(progress_postfix(m, ev, enumerated=True).items()) == [
        ("E[r]", "0.512"), ("auc/gene", "0.523 [0.47,0.58]"), ("len", "4"), ("step_s", "3.2")]
    # sampled GRPO: the step's mean reward moves; an eval without per-gene AUROC shows the pooled one
    assert list(progress_postfix(m, {"eval_forced/auroc": 0.61}, enumerated=False).items()) == [
        ("reward", "0.600"), ("auroc", "0.610"), ("len", "4"), ("step_s", "3.2")]
    # a step that trained nothing has no policy_expected_reward: shown as "-", not a stale number
    assert progress_postfix({"reward_mean": 0.6}, {}, enumerated=True) == {"E[r]": "-"}
