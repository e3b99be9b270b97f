"""Sweep results: one table row per trial, the best config as a ready training config, a plot.

Written from Tune's :class:`~ray.tune.ResultGrid`, so the same report comes out of a fresh
run and of ``Tuner.restore``. Files are written to a temporary name and renamed
(``os.replace``), so a reader never sees half a table.

Columns of ``results.csv`` / ``results.parquet``:
``trial_id``, ``status`` (COMPLETED, STOPPED = stopped early by the scheduler, ERROR,
INTERRUPTED = cut off by an interrupted sweep; ``--resume`` finishes it),
``error`` (first line of the trial's exception), ``steps``, one ``config/<key>`` column per
searched key (and ``config/verifier_set``; empty (NaN) where the trial's verifier set has no
verifier of that name, so the value was sampled but never used), ``final/<metric>`` (last
report) and ``best/<metric>`` (best report) for the sweep metric, the eval metrics and the
reward. Rows are sorted by ``final/<tune.metric>``, best first; ``best_config.yaml`` is the
first row that did not fail. The reward columns compare different reward functions when
the verifier sets differ, so they are reported, never ranked by (see ``parse_sweep``).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from softverify.infra.fsutil import atomic_file
from softverify.platform.sweep.spec import VERIFIER_SET_KEY, Sweep

#: Metrics summarised per trial besides the sweep metric.
SUMMARY_METRICS = ("eval_forced/auroc", "eval/mcc", "eval/f1", "eval/balanced_accuracy", "reward_mean")


def _atomic(path: Path, write) -> None:
    with atomic_file(path) as tmp:
        write(tmp)


def _history(result) -> Any:
    df = result.metrics_dataframe
    if df is None or len(df) == 0:
        return None
    return df.sort_values("step") if "step" in df.columns else df


_EXC_LINE = re.compile(r"^\s*[\w.]*(Error|Exception|Exit)\w*: \S")


def error_line(error: BaseException) -> str:
    """The line of a (possibly Ray-wrapped) traceback that says what went wrong: the last
    ``SomeError: message`` line, not Ray's trailing advice."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    hits = [ln for ln in lines if _EXC_LINE.match(ln)]
    return (hits[-1] if hits else lines[-1] if lines else type(error).__name__)[:300]


def _tune_status(results) -> dict[str, str]:
    """trial id -> Tune's status (TERMINATED, ERROR, PENDING, PAUSED, RUNNING) from the
    experiment state on disk; tells a trial ASHA stopped from one an interrupt cut off."""
    from ray.tune import ExperimentAnalysis

    try:
        return {t.trial_id: t.status for t in ExperimentAnalysis(results.experiment_path).trials}
    except Exception:  # noqa: BLE001 - the report must not fail on a state-file quirk
        return {}


def trial_id(result) -> str:
    """Tune's id of the trial behind ``result`` (from its last report, else its directory)."""
    return str((result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix("trial_"))


def results_table(sweep: Sweep, results):
    """A pandas DataFrame with one row per trial (see the module docstring)."""
    import pandas as pd

    t = sweep.spec.tune
    metrics = [t.metric] + [m for m in SUMMARY_METRICS if m != t.metric]
    keys = ([VERIFIER_SET_KEY] if sweep.verifier_sets else []) + list(sweep.dists)
    steps_total = sweep.trial_config({}, "unused").trainer.steps
    tune_status = _tune_status(results)
    rows = []
    for res in results:
        cfg = res.config or {}
        hist = _history(res)
        tid = trial_id(res)
        steps = int(hist["step"].max()) if hist is not None and "step" in hist else 0
        if res.error is not None:
            status, error = "ERROR", error_line(res.error)
        elif steps >= steps_total:
            status, error = "COMPLETED", ""
        elif tune_status.get(tid, "TERMINATED") == "TERMINATED":
            status, error = "STOPPED", ""  # by the scheduler (ASHA)
        else:
            status, error = "INTERRUPTED", ""  # the sweep was interrupted: --resume finishes it
        row: dict[str, Any] = {"trial_id": tid, "status": status, "error": error, "steps": steps}
        unused = sweep.unused_params({k: cfg[k] for k in keys if k in cfg})
        for k in keys:
            v = None if k in unused else cfg.get(k)  # a value the trial's verifier set never used
            row[f"config/{k}"] = v if not isinstance(v, (list, dict)) else repr(v)
        for m in metrics:
            col = hist[m].dropna() if hist is not None and m in hist else None
            row[f"final/{m}"] = float(col.iloc[-1]) if col is not None and len(col) else math.nan
            best = (col.max() if t.mode == "max" else col.min()) if col is not None and len(col) else math.nan
            row[f"best/{m}"] = float(best)
        for side in ("lo", "hi"):  # the ranking metric's 95 % interval at its final eval, where eval logs one
            b = f"{t.metric}_{side}"
            col = hist[b].dropna() if hist is not None and b in hist else None
            if col is not None and len(col):
                row[f"final/{b}"] = float(col.iloc[-1])
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values("trial_id", kind="stable")  # ties in the metric: stable, deterministic order
        df = df.sort_values(f"final/{t.metric}", ascending=t.mode == "min", na_position="last", kind="stable")
    return df.reset_index(drop=True)


def best_trial(sweep: Sweep, results):
    """The non-failed trial with the best *final* value of the metric (Tune's scope='last')."""
    t = sweep.spec.tune
    best, best_v = None, None
    for res in sorted(results, key=trial_id):  # ties: the lowest trial id, as in results.csv
        if res.error is not None:
            continue
        hist = _history(res)
        if hist is None or t.metric not in hist or hist[t.metric].dropna().empty:
            continue
        v = float(hist[t.metric].dropna().iloc[-1])
        if best is None or (v > best_v if t.mode == "max" else v < best_v):
            best, best_v = res, v
    return best


def best_config_yaml(sweep: Sweep, result) -> str:
    """The best trial's complete TrainConfig as YAML, ready for ``softverify train --config``."""
    from softverify.config import build_config

    params = {k: v for k, v in (result.config or {}).items() if k == VERIFIER_SET_KEY or k in sweep.dists}
    raw = sweep.trial_raw(params)
    unused = sweep.unused_params(params)
    params = {k: v for k, v in params.items() if k not in unused}  # the header lists what the trial used
    trainer = dict(raw.get("trainer") or {})
    trainer["output_dir"] = str(Path(sweep.spec.output_dir) / "best_run")
    raw["trainer"] = trainer
    cfg = build_config(raw)
    header = (f"# best trial of sweep {sweep.spec.name!r} by final {sweep.spec.tune.metric} "
              f"({sweep.spec.tune.mode}); searched values: {params}\n")
    return header + yaml.safe_dump(cfg.model_dump(), sort_keys=False)


def trial_label(sweep: Sweep, config: dict[str, Any], tid: str) -> str:
    """What a person reads in the legend: the verifier set and the searched values the trial
    used (``hard_format_length lr=0.0031 length.weight=1.2``); the trial id only as a tiebreak."""
    params = {k: config[k] for k in [VERIFIER_SET_KEY, *sweep.dists] if k in config}
    unused = sweep.unused_params(params)
    parts = [str(params[VERIFIER_SET_KEY])] if VERIFIER_SET_KEY in params else []
    for k in sweep.dists:
        if k in params and k not in unused:
            v = params[k]
            short = ".".join(k.split(".")[1:]) if k.startswith("verifiers.") else k.split(".")[-1]
            parts.append(f"{short}={v:.3g}" if isinstance(v, float) else f"{short}={v}")
    return " ".join(parts + [f"({tid[-5:]})"]) if parts else tid


def plot(sweep: Sweep, results, table, path: Path) -> None:
    """sweep.png: :func:`sweep_figure`, written atomically."""
    fig = sweep_figure(sweep, results, table)
    import matplotlib.pyplot as plt  # after sweep_figure chose the Agg backend

    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def sweep_figure(sweep: Sweep, results, table):
    """metric vs step and reward (or eval MCC) vs step per trial, each line named by its
    verifier set and searched values (:func:`trial_label`); the final metric by verifier set
    (mean and best), or per trial when the sweep has no verifier sets. Whole-step ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    t = sweep.spec.tune
    metric = t.metric
    second = "reward_mean" if metric != "reward_mean" else "eval/mcc"  # the reward curve, or eval
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    labels = {trial_id(r): trial_label(sweep, r.config or {}, trial_id(r)) for r in results}
    for res in sorted(results, key=trial_id):  # legend in trial order
        hist = _history(res)
        if hist is None or "step" not in hist:
            continue
        for ax, m in ((axes[0], metric), (axes[1], second)):
            if m in hist:
                ax.plot(hist["step"], hist[m], marker="o", label=labels[trial_id(res)])
    for ax, m in ((axes[0], metric), (axes[1], second)):
        ax.set_xlabel("GRPO step")
        ax.set_ylabel(m)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        own = m == "reward_mean" and sweep.varies_reward
        ax.set_title(f"{m} per trial" + (" (each trial's own reward)" if own else ""))
    if 0 < len(axes[0].get_lines()) <= 12:
        axes[0].legend(fontsize=7)
    ok = table[table["status"] != "ERROR"] if len(table) else table
    by_set = f"config/{VERIFIER_SET_KEY}" in ok
    col = f"final/{metric}"
    if len(ok) and col in ok:
        if by_set:
            g = ok.groupby(f"config/{VERIFIER_SET_KEY}", sort=False)[col].agg(["mean", "max", "min"])
            xs = range(len(g))
            axes[2].bar([x - 0.2 for x in xs], g["mean"], width=0.4, label="mean")
            axes[2].bar([x + 0.2 for x in xs], g["max" if t.mode == "max" else "min"], width=0.4, label="best")
            names = [str(i) for i in g.index]
            axes[2].legend(fontsize=8)
        else:  # one bar per trial, named like the legend, not by its id
            xs = range(len(ok))
            axes[2].bar(list(xs), ok[col], width=0.6)
            names = [labels.get(str(i), str(i)) for i in ok["trial_id"]]
        axes[2].set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    axes[2].set_title(f"final {metric} by {'verifier set' if by_set else 'trial'}")
    fig.tight_layout()
    return fig


def separability_note(sweep: Sweep, table) -> str | None:
    """A line saying the best trial is not separable from the next when their final 95 %
    intervals of the ranking metric overlap (None when they do not, or no intervals were
    logged): a sweep over a few hundred questions ranks by noise as readily as by signal."""
    t = sweep.spec.tune
    lo, hi, v = f"final/{t.metric}_lo", f"final/{t.metric}_hi", f"final/{t.metric}"
    if lo not in table or hi not in table:
        return None
    ok = table[(table["status"] != "ERROR") & table[v].notna() & table[lo].notna() & table[hi].notna()]
    if len(ok) < 2:
        return None
    a, b = ok.iloc[0], ok.iloc[1]  # the table is sorted best first
    overlap = a[lo] <= b[hi] if t.mode == "max" else a[hi] >= b[lo]
    if not overlap:
        return None
    return (f"not separable: the best trial {a['trial_id']} ({t.metric} {a[v]:.3f} [{a[lo]:.3f}, {a[hi]:.3f}]) "
            f"and the next, {b['trial_id']} ({b[v]:.3f} [{b[lo]:.3f}, {b[hi]:.3f}]), have overlapping 95 % "
            "intervals; more eval questions (data.eval_genes) or seeds are needed to choose between them")


def no_best_reason(sweep: Sweep, table) -> str:
    """Why there is no best config: every trial failed, or none reported the metric."""
    t = sweep.spec.tune
    if not len(table) or (table["status"] == "ERROR").all():
        return "every trial failed (see the 'error' column of results.csv)"
    return (f"no trial reported tune.metric={t.metric!r}" + (" (it is logged at eval steps: "
            "trainer.eval_every)" if sweep.uses_eval else ""))


def write_report(sweep: Sweep, results) -> dict[str, Path]:
    """results.csv, results.parquet, best_config.yaml (if a trial that did not fail
    reported the metric), sweep.png."""
    out = Path(sweep.spec.output_dir)
    table = results_table(sweep, results)
    paths = {"csv": out / "results.csv", "parquet": out / "results.parquet", "plot": out / "sweep.png"}
    _atomic(paths["csv"], lambda tmp: table.to_csv(tmp, index=False))
    _atomic(paths["parquet"], lambda tmp: table.to_parquet(tmp, index=False))
    best = best_trial(sweep, results)
    if best is not None:
        paths["best_config"] = out / "best_config.yaml"
        text = best_config_yaml(sweep, best)
        _atomic(paths["best_config"], lambda tmp: tmp.write_text(text))
    else:  # a restored sweep must not leave an older run's best config standing
        (out / "best_config.yaml").unlink(missing_ok=True)
    plot(sweep, results, table, paths["plot"])
    return paths
