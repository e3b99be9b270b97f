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
