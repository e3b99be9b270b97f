"""Per-step metrics: JSONL on disk (always), Weights & Biases and TensorBoard (optional), plots.

JSONL is appended and flushed every step so a crashed run keeps every finished step and a
person can plot a run while it is going.
"""
from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any


def drop_steps_after(path: Path, step: int) -> None:
    """Drop the lines of ``path`` (a per-step JSONL file) logged for steps after ``step``.

    On resume the restored checkpoint is at ``step``; a run killed between logging step
    ``step + 1`` and checkpointing it has already written that step's lines, and the resumed
    run writes them again. Rewritten atomically so a crash here loses nothing."""
    from softverify.infra.fsutil import write_text_atomic

    if not path.exists():
        return
    keep = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l).get("step", 0) <= step]
    write_text_atomic(path, "".join(l + "\n" for l in keep))


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


#: TensorBoard's folder inside a run's output directory (``trainer.tensorboard``)
TENSORBOARD_DIR = "tensorboard"


def _scalar(v: Any) -> float | None:
    """``v`` as a TensorBoard scalar (Python and numpy numbers, a bool as 0/1), or None for
    what is not one (text, None, NaN, inf: metrics.jsonl holds those as they are)."""
    if not isinstance(v, numbers.Real):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


class MetricsLogger:
    """Writes each step's metrics to ``metrics.jsonl`` and, when asked, to W&B and TensorBoard.

    ``truncate_after_step`` (a resumed run's checkpoint step) drops the lines of later steps a
    killed run had already logged; TensorBoard gets the same step as its ``purge_step``, so
    its curves do not show the dropped steps twice either."""

    def __init__(self, out_dir: Path, use_wandb: bool = False, project: str = "softverify", config: dict | None = None,
                 truncate_after_step: int | None = None, use_tensorboard: bool = False):
        self.path = out_dir / "metrics.jsonl"
        out_dir.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is not None:
            drop_steps_after(self.path, truncate_after_step)
        self._f = open(self.path, "a")
        self._wandb = None
        self._tb = None
        if use_wandb:
            import os

            import wandb

            os.environ.setdefault("WANDB_MODE", "offline")
            self._wandb = wandb.init(project=project, config=config or {}, dir=str(out_dir))
        if use_tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = truncate_after_step + 1 if truncate_after_step else None
            self._tb = SummaryWriter(log_dir=str(out_dir / TENSORBOARD_DIR), purge_step=purge)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        rec = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)
        if self._tb is not None:
            for k, v in metrics.items():
                f = _scalar(v)
                if f is not None:
                    self._tb.add_scalar(k, f, global_step=step)
            self._tb.flush()  # a run watched live (or killed) shows every finished step

    def close(self) -> None:
        self._f.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


def plot_metrics(jsonl: Path, out_png: Path, keys: list[str] | None = None, title: str | None = None) -> Path:
    """metrics.png: :func:`metrics_figure` of a run's metrics.jsonl, titled with the run
    (default: its directory name)."""
    rows = read_metrics(jsonl)
    if not rows:
        raise ValueError(f"{jsonl} holds no metrics to plot")
    fig = metrics_figure(rows, keys, title or Path(jsonl).resolve().parent.name)
    import matplotlib.pyplot as plt  # after metrics_figure chose the Agg backend

    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def progress_postfix(m: dict[str, Any], last_eval: dict[str, Any], enumerated: bool) -> dict[str, str]:
    """The progress bar's fields, in order, led by what moves. With the enumerated estimator
    every candidate answer is scored, so the step's mean reward is fixed by construction; the
    policy's own expected reward (``E[r]``, ``policy_expected_reward``) is what training
    raises. Then the last eval's per-gene AUROC with its interval (pooled AUROC where the eval
    has no per-gene metric), then length and seconds per step."""
    def num(v: Any) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    out = {"E[r]": num(m.get("policy_expected_reward"))} if enumerated else {"reward": num(m.get("reward_mean"))}
    for key, short in (("eval_forced/auc_per_gene", "auc/gene"), ("eval_forced/auroc", "auroc")):
        v = last_eval.get(key)
        if v is not None:
            lo, hi = last_eval.get(key + "_lo"), last_eval.get(key + "_hi")
            out[short] = f"{v:.3f}" + (f" [{lo:.2f},{hi:.2f}]" if lo is not None and hi is not None else "")
            break
    if m.get("response_len_mean") is not None:
        out["len"] = f"{m['response_len_mean']:.0f}"
    if m.get("time/step_s") is not None:
        out["step_s"] = f"{m['time/step_s']:.1f}"
    return out


def flat_keys(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """The keys whose series is flat: two or more logged values, all equal (e.g. the
    enumerated estimator's ``reward_mean``, a fixed ``lr``, a verifier that never abstains).
    A single value is not flat: a short run's one eval is still worth its panel."""
    out = []
    for k in keys:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        if len(vals) >= 2 and max(vals) - min(vals) <= 1e-12 * max(1.0, abs(vals[0])):
            out.append(k)
    return out


def metrics_figure(rows: list[dict[str, Any]], keys: list[str] | None, title: str):
    """A grid of metric-vs-step panels (reward per verifier, eval AUROC/MCC, KL, entropy,
    length, timings) under a title naming the run and its steps, so a PNG shared on its own
    still says what it shows. Steps are whole numbers on the axis, even for a 1-step run.

    With the default keys, panels whose series is flat (:func:`flat_keys`) are dropped and a
    line under the panels names them with their value: a flat curve says nothing a number
    cannot, and half a grid of them hid the curves that move. Explicit ``keys`` are all drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if keys is None:
        seen = {k: None for r in rows for k in r}  # eval runs only every few steps: look at all rows
        # led by what moves: the policy's own expected reward and the headline eval metric
        keys = [k for k in ("policy_expected_reward", "eval_forced/auc_per_gene") if k in seen]
        keys += [k for k in seen if k.startswith("reward/")]
        keys += [k for k in seen if k.startswith(("diag/corr_label/", "diag/disagree_hard/"))]
        keys += [k for k in ("eval_forced/teacher_auc_per_gene",
                             "eval_forced/teacher_agreement_per_gene", "eval_forced/auroc", "eval_forced/auprc", "eval_forced/spearman_ref", "eval/mcc",
                             "eval/f1", "eval/unanswered_rate", "eval_forced/mcc",
                             "eval_forced/balanced_accuracy") if k in seen]
        keys += [k for k in ("reward_mean", "dynamic/zero_var_group_frac", "kl",
                             "entropy", "response_len_mean", "clip_frac", "lr", "time/step_s", "throughput/questions_per_hour") if k in seen]
        flat = flat_keys(rows, keys)
        if len(flat) < len(keys):  # everything flat: draw it all rather than an empty figure
            keys = [k for k in keys if k not in flat]
        else:
            flat = []
    else:
        flat = []
    keys = keys or [k for k in rows[-1] if k != "step"][:6]
    ncol = 3
    nrow = math.ceil(len(keys) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 2.8 * nrow), squeeze=False)
    steps = [r["step"] for r in rows if "step" in r]
    for ax, k in zip(axes.flat, keys):
        pts = [(r["step"], r[k]) for r in rows if r.get(k) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3)
        band = [(r["step"], r[k + "_lo"], r[k + "_hi"]) for r in rows
                if r.get(k + "_lo") is not None and r.get(k + "_hi") is not None]
        if band:  # bootstrap 95% interval of an eval metric
            st, lo, hi = zip(*band)
            ax.fill_between(st, lo, hi, alpha=0.25)
            if len(st) == 1:  # one eval (a short run's end-of-run eval): a band of one point is invisible
                ax.vlines(st, lo, hi, alpha=0.5, lw=3)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        if steps and max(steps) - min(steps) < 6:  # too few for a locator: one tick per step
            ax.set_xticks(range(min(steps), max(steps) + 1))
            ax.set_xlim(min(steps) - 0.5, max(steps) + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(f"{title} - steps {min(steps)}-{max(steps)}" if steps else title, fontsize=10)
    bottom = 0.0
    if flat:
        import textwrap

        def value(k: str) -> str:
            v = next(r[k] for r in rows if r.get(k) is not None)
            return f"{v:.4g}" if isinstance(v, float) else str(v)

        note = textwrap.fill("flat, not drawn: " + ", ".join(f"{k} = {value(k)}" for k in flat), width=40 * ncol)
        lines = note.count("\n") + 1
        bottom = (0.18 * lines + 0.1) / fig.get_figheight()
        fig.text(0.01, 0.01, note, fontsize=8, ha="left", va="bottom")
    fig.dropped_flat = flat  # the keys left out, for callers and tests
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.45 / fig.get_figheight()))  # ~0.45 in for the title above the panels
    return fig
