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
