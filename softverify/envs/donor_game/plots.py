"""The paper's two views of a run, from ``decisions.jsonl`` alone.

* Figure 2 -- average final resources per generation (one line per run/seed).
* Figure 6 -- donation fractions: the mean fraction given per generation over ``donate``
  decisions (with the inter-quartile band; punishments are counted in ``punish_rate``) and, per generation, the mean fraction by round within a game,
  which shows whether cooperation builds up or decays as a game goes on: one such panel per run,
each titled with the run (:func:`run_labels`), so comparing runs hides none of them.

:func:`figure_numbers` returns exactly the numbers drawn, so a report can quote them.
Uses the Agg backend: no display needed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from softverify.envs.donor_game.runner import read_jsonl, write_json_atomic


def figure_numbers(records: list[dict]) -> dict:
    """Per generation: average final resources, donation-fraction stats, fraction by round."""
    gens = [r for r in records if r["type"] == "generation"]
    dec = [r for r in records if r["type"] == "decision"]
    out: dict = {"generations": [], "average_final_resources": [], "mean_donation_fraction": [],
                 "q25_donation_fraction": [], "q75_donation_fraction": [], "fraction_by_round": {},
                 "invalid_decision_rate": [], "punish_rate": []}
    for g in gens:
        k = g["generation"]
        ds = [d for d in dec if d["generation"] == k]
        fr = np.array([d["fraction"] for d in ds if d["kind"] == "donate"] or [0.0])
        out["generations"].append(k)
        out["average_final_resources"].append(round(g["average_final_resources"], 4))
        out["mean_donation_fraction"].append(round(float(fr.mean()), 4))
        out["q25_donation_fraction"].append(round(float(np.quantile(fr, 0.25)), 4))
        out["q75_donation_fraction"].append(round(float(np.quantile(fr, 0.75)), 4))
        out["invalid_decision_rate"].append(round(float(np.mean([not d["valid"] for d in ds])) if ds else 0.0, 4))
        out["punish_rate"].append(round(float(np.mean([d["kind"] == "punish" for d in ds])) if ds else 0.0, 4))
        rounds = sorted({d["round"] for d in ds})
        out["fraction_by_round"][str(k)] = [
            round(float(np.mean([d["fraction"] for d in ds if d["round"] == r and d["kind"] == "donate"] or [0.0])), 4)
            for r in rounds
        ]
    return out


def run_labels(runs: list[str]) -> dict[str, str]:
    """run -> its name in the legends and panel titles: the shortest trailing part of its
    path that tells it from the other runs (``a/seed0`` and ``b/seed0``, not ``seed0`` twice),
    naming a ``decisions.jsonl`` file by its directory."""
    parts = {}
    for r in runs:
        p = Path(r)
        p = p.parent if p.suffix == ".jsonl" else p
        parts[r] = p.resolve().parts[1:] or (str(p),)
    n = 1
    while n < max(len(v) for v in parts.values()):
        tails = [v[-n:] for v in parts.values()]
        if len(set(tails)) == len(tails):
            break
        n += 1
    return {r: "/".join(v[-n:]) for r, v in parts.items()}


def plot_runs(run_dirs: list[str | Path], out_dir: str | Path) -> dict:
    """Draw both figures for one or more runs; returns ``{run: figure_numbers}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    numbers = {}
    for d in run_dirs:
        p = Path(d)
        path = p / "decisions.jsonl" if p.is_dir() else p
        if not path.is_file():
            raise FileNotFoundError(f"no decisions.jsonl at {str(path)!r}")
        numbers[str(d)] = figure_numbers(read_jsonl(path))
        if not numbers[str(d)]["generations"]:
            raise ValueError(f"{str(path)!r} has no finished generation to plot")

    labels = run_labels(list(numbers))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, n in numbers.items():
        ax.plot(n["generations"], n["average_final_resources"], marker="o", label=labels[name])
    vals = [v for n in numbers.values() for v in n["average_final_resources"]]
    if min(vals) > 0 and max(vals) / min(vals) > 50:  # e.g. all-defect (10) next to all-cooperate (30720)
        ax.set_yscale("log")
    ax.set_xlabel("generation")
    ax.set_ylabel("average final resources")
    ax.set_title("Donor game: average final resources per generation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "average_resources.png", dpi=120)
    plt.close(fig)

    # one "by round" panel per run: each run's generations build up (or lose) cooperation in
    # their own way, and drawing only the first run's hid the others
    panels = 1 + len(numbers)
    ncol = min(3, panels)
    nrow = -(-panels // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.5 * ncol, 4 * nrow), squeeze=False)
    a1 = axes.flat[0]
    for name, n in numbers.items():
        lbl = labels[name]
        a1.plot(n["generations"], n["mean_donation_fraction"], marker="o", label=lbl)
        a1.fill_between(n["generations"], n["q25_donation_fraction"], n["q75_donation_fraction"], alpha=0.2)
    a1.set(xlabel="generation", ylabel="fraction of resources donated", title="Donation fraction per generation", ylim=(0, 1))
    a1.xaxis.set_major_locator(MaxNLocator(integer=True))
    a1.legend(fontsize=8)
    cmap = plt.get_cmap("viridis")
    for a2, (name, n) in zip(list(axes.flat)[1:], numbers.items()):
        G = len(n["fraction_by_round"])
        for i, (k, fr) in enumerate(n["fraction_by_round"].items()):
            a2.plot(range(1, len(fr) + 1), fr, color=cmap(i / max(G - 1, 1)), label=f"gen {k}")
        a2.set(xlabel="round", ylabel="mean fraction donated", title=f"By round: {labels[name]}", ylim=(0, 1))
        a2.xaxis.set_major_locator(MaxNLocator(integer=True))
        a2.legend(fontsize=7, ncol=2)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "donation_fractions.png", dpi=120)
    plt.close(fig)
    write_json_atomic(out_dir / "figure_numbers.json", numbers)
    return numbers
