"""The verifier report: what a set of verifiers will teach, measured before training.

For a labelled question set, every verifier scores the answer "yes" and the answer "no" to
every question. From those two score matrices:

- agreement with the labels: AUROC of the verifier's preference for "yes" (score(yes) -
  score(no)), MCC of its decision (prefers yes or not), calibration (ECE, Brier) of its
  normalised yes-score read as P(yes), abstention rate;
- on knockdown questions, PerturbQA's per-gene AUROC of each verifier's preference (the mean
  over target genes of the AUROC across knockdowns: what it knows beyond "B is often DE"),
  with the CLI adding the lookups scored on the same questions;
- pairwise agreement between verifiers: Spearman correlation of their preferences;
- the expected reward, after threshold normalisation and the configured composition, of
  fixed strategies: always yes, always no, follow the label, follow each verifier. If
  "always no" earns about what "follow the label" does, training will find the easy hill:
  the base-rate trap, visible here before a single step. ``yes_push`` is the fraction of
  questions on which the composed reward prefers "yes": what GRPO's std-normalised
  advantages push the shared "answer yes" direction with (0.5 = neutral).
- the same fixed strategies in the values the learner receives under the configured
  ``reward.aggregation`` (``learner``): with every question's group = {yes, no} (the
  enumerated estimator's candidate set), ``sum_then_normalize`` passes the weighted-mean
  reward on, while ``normalize_then_sum`` (GDPO) group-normalises each verifier on its own
  pair, combines them and rescales to unit std over the whole question set. There 0 is
  "no preference" and always yes = - always no by construction; follow the label shows
  how much signal is left once every verifier counts equally per question.

Ray-free: verifiers are built from their specs exactly as the training pool builds them,
once, in one :class:`~softverify.verifiers.suite.VerifierSuite` (or taken from the caller's,
e.g. the trainer's pre-flight): threshold policies resolve with the same world models that
then score.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from softverify.metrics.calibration import brier_score, expected_calibration_error, reliability_bins
from softverify.rewards import compose, enumerated_learner_values, threshold_normalize, weighted_mean_available
from softverify.types import Sample
from softverify.verifiers.base import composition_thresholds, verifier_class


def answer_samples(rows: Sequence[dict], answers: Sequence[int], style: str = "direct") -> list[Sample]:
    """Samples that answer each row with ``answers[i]`` (1 yes, 0 no) in the given style."""
    out = []
    for i, (r, a) in enumerate(zip(rows, answers)):
        word = "yes" if a else "no"
        text = f"<answer>{word}</answer>" if style == "direct" else f"<think>\n</think>\n<answer>\n{word}\n</answer>"
        out.append(Sample(prompt_id=str(r.get("prompt_id", i)), prompt=str(r.get("question", "")), completion=text,
                          metadata=dict(r)))
    return out


def composed_reward(scores: np.ndarray, weights: Sequence[float], thresholds: Sequence[float | None]) -> np.ndarray:
    """Per-sample reward as training composes it before group normalisation."""
    cols = [threshold_normalize(scores[:, j], thresholds[j]) for j in range(scores.shape[1])]
    return weighted_mean_available(np.column_stack(cols), np.asarray(weights, dtype=np.float64))


def pair_learner_values(s_yes: np.ndarray, s_no: np.ndarray, weights: Sequence[float],
                        thresholds: Sequence[float | None], aggregation: str,
                        advantage: str = "grpo") -> tuple[np.ndarray, np.ndarray]:
    """Per question, what the enumerated learner receives for "yes" and for "no" when the
    question's group is exactly those two candidates: :func:`softverify.rewards.compose`
    (the trainer's code) on the interleaved pairs, then
    :func:`~softverify.rewards.enumerated_learner_values`."""
    n, k = s_yes.shape
    scores = np.empty((2 * n, k))
    scores[0::2], scores[1::2] = s_yes, s_no
    rewards, adv = compose(scores, weights, thresholds, np.repeat(np.arange(n), 2), aggregation, advantage)
    v = enumerated_learner_values(rewards, adv, aggregation)
    return v[0::2], v[1::2]


def fixed_strategy_rewards(r_yes: np.ndarray, r_no: np.ndarray, labels: np.ndarray,
                           follow: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean composed reward of each fixed strategy; ``follow[name]`` = 1 where that
    verifier prefers yes, 0 where no, -1 where it abstains (then the strategy says no)."""
    def pick(ans: np.ndarray) -> float:
        r = np.where(ans == 1, r_yes, r_no)
        return float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")

    out = {"always_yes": pick(np.ones(len(labels), dtype=int)), "always_no": pick(np.zeros(len(labels), dtype=int)),
           "follow_label": pick(np.asarray(labels, dtype=int))}
    for name, pref in follow.items():
        out[f"follow_{name}"] = pick(np.where(np.asarray(pref) == 1, 1, 0))
    return out


#: how close (in mean composed reward) a fixed answer may come to the best informed strategy
#: before the report calls it the base-rate trap: below this gap the gradient toward using the
#: question is too weak against sampling noise, and runs were seen to collapse onto one answer
TRAP_MARGIN = 0.02


def base_rate_verdict(fixed: dict[str, float], margin: float = TRAP_MARGIN) -> dict[str, Any]:
    """Whether a fixed answer (always yes / always no) earns within ``margin`` of the best
    informed strategy (follow the label, or follow a verifier) in ``fixed`` (as
    :func:`fixed_strategy_rewards` gives them): then the reward barely pays for reading the
    question, and GRPO finds the easy hill. ``{"trap", "fixed", "fixed_reward", "informed",
    "informed_reward", "gap", "margin", "line"}``; ``line`` is the verdict in words."""
    fin = {k: v for k, v in fixed.items() if v is not None and np.isfinite(v)}
    fixed_name = max((k for k in ("always_yes", "always_no") if k in fin), key=lambda k: fin[k], default=None)
    informed = max((k for k in fin if k.startswith("follow_")), key=lambda k: fin[k], default=None)
    if fixed_name is None or informed is None:
        return {"trap": False, "fixed": fixed_name, "informed": informed, "gap": float("nan"), "margin": margin,
                "line": "verdict: no fixed-strategy rewards to compare (every verifier abstained)"}
    gap = fin[informed] - fin[fixed_name]
    trap = bool(gap <= margin)
    f_txt, i_txt = fixed_name.replace("_", " "), informed.replace("_", " ", 1)
    if trap:
        line = (f"verdict: BASE-RATE TRAP: {f_txt} earns {fin[fixed_name]:.3f}, within {margin:g} of the best "
                f"informed strategy ({i_txt}: {fin[informed]:.3f}); a policy that ignores the question is paid about "
                "as well as one that reads it, and training drifts to that answer. Move a soft verifier's threshold to "
                "the prompts' balance point (world_model params.threshold: median under GRPO, balanced under Dr. GRPO), "
                "stratify the steps (data.stratify_by: label or the verifier's name), or add the hard verifier")
    else:
        line = (f"verdict: no base-rate trap: {i_txt} earns {fin[informed]:.3f}, {gap:.3f} more than {f_txt} "
                f"({fin[fixed_name]:.3f}; margin {margin:g})")
    return {"trap": trap, "fixed": fixed_name, "fixed_reward": fin[fixed_name], "informed": informed,
            "informed_reward": fin[informed], "gap": float(gap), "margin": margin, "line": line}


def _built(specs, built: dict | None, defer_threshold_policies: bool = False) -> dict:
    """``built`` (display name -> verifier), with a :class:`VerifierSuite` of the specs it
    lacks (all of them when None): every verifier built once, by the caller or here."""
    from softverify.verifiers.suite import VerifierSuite

    built = dict(built or {})
    missing = [s for s in specs if s.display_name not in built]
    if missing:
        built.update(VerifierSuite(missing, defer_threshold_policies=defer_threshold_policies).verifiers)
    return built


def base_rate_check(specs, rows: Sequence[dict], style: str = "direct", built: dict | None = None,
                    margin: float = TRAP_MARGIN) -> dict[str, Any]:
    """The fixed-strategy rewards and :func:`base_rate_verdict` alone, for ``softverify train``
    to run on a few hundred training questions before it starts: no calibration, per-gene
    AUROC or correlations. ``built`` (display name -> verifier) reuses verifiers the caller
    has already built (the trainer's pre-flight :func:`softverify.verifiers.suite.check_specs`);
    ``specs`` must already carry resolved thresholds. Verifiers that need the policy are left
    out, as in :func:`verifier_report`."""
    from softverify.task.answer import label_to_int

    specs = [s for s in specs if not verifier_class(s.kind).needs_policy]
    labels = np.array([_row_label(i, r, label_to_int) for i, r in enumerate(rows)])
    n = len(rows)
    yes, no = answer_samples(rows, [1] * n, style), answer_samples(rows, [0] * n, style)
    built = _built(specs, built)
    verifiers = [built[s.display_name] for s in specs]
    s_yes = np.column_stack([v.score(yes) for v in verifiers])
    s_no = np.column_stack([v.score(no) for v in verifiers])
    thresholds = composition_thresholds(specs)
    follow = {}
    for j, spec in enumerate(specs):
        pref = threshold_normalize(s_yes[:, j], thresholds[j]) - threshold_normalize(s_no[:, j], thresholds[j])
        follow[spec.display_name] = np.where(np.isfinite(pref), (pref > 0).astype(int), -1)
    weights = [s.weight for s in specs]
    fixed = fixed_strategy_rewards(composed_reward(s_yes, weights, thresholds),
                                   composed_reward(s_no, weights, thresholds), labels, follow)
    return {"n_questions": n, "fixed_strategies": fixed, "verdict": base_rate_verdict(fixed, margin)}


def _row_label(i: int, row: dict, convert) -> int:
    try:
        return convert(row["label"])
    except ValueError as e:
        raise ValueError(f"question {i}, field 'label': {e}") from None


def de_oriented(rows: Sequence[dict], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(negated, DE label, target gene)`` per row when every row is a knockdown question
    (``pert`` and ``gene`` fields), else None: a negated question ("... unchanged?") asks the
    opposite, so its label and any preference for "yes" flip onto the DE scale the per-gene
    metric ranks on."""
    if not rows or not all("pert" in r and "gene" in r for r in rows):
        return None
    neg = np.array([bool(r.get("negated", False)) for r in rows])
    return neg, np.where(neg, 1 - labels, labels), np.array([str(r["gene"]) for r in rows])


def verifier_report(specs, rows: Sequence[dict], style: str = "direct", aggregation: str = "sum_then_normalize",
                    advantage: str = "grpo", built: dict | None = None) -> dict[str, Any]:
    """Scores of every verifier for "yes" and "no" on each labelled row, summarised (see the
    module docstring); ``aggregation`` / ``advantage`` are the training config's
    ``reward.aggregation`` / ``algorithm.advantage``, for the ``learner`` section. ``built``
    (display name -> verifier: a suite's ``verifiers`` or ``check_specs``'s, threshold policies
    deferred or resolved) is used as it is; the verifiers it lacks are built here, once, in
    one suite. A threshold policy resolves over ``rows`` with the built verifier's model."""
    from scipy.stats import spearmanr
    from sklearn.metrics import matthews_corrcoef, roc_auc_score

    from softverify.verifiers.balance import resolve_threshold_policies

    specs = [s for s in specs if not verifier_class(s.kind).needs_policy]
    built = _built(specs, built, defer_threshold_policies=True)
    specs, chosen = resolve_threshold_policies(specs, rows, built)
    from softverify.task.answer import label_to_int

    labels = np.array([_row_label(i, r, label_to_int) for i, r in enumerate(rows)])
    n = len(rows)
    yes, no = answer_samples(rows, [1] * n, style), answer_samples(rows, [0] * n, style)
    verifiers = [built[s.display_name] for s in specs]
    s_yes = np.column_stack([v.score(yes) for v in verifiers])
    s_no = np.column_stack([v.score(no) for v in verifiers])
    thresholds = composition_thresholds(specs)
    per: dict[str, dict] = {}
    prefs: dict[str, np.ndarray] = {}
    follow: dict[str, np.ndarray] = {}
    for j, (spec, v) in enumerate(zip(specs, verifiers)):
        name = spec.display_name
        y_n = threshold_normalize(s_yes[:, j], thresholds[j])
        n_n = threshold_normalize(s_no[:, j], thresholds[j])
        pref = y_n - n_n
        ok = np.isfinite(pref)
        prefs[name] = pref
        follow[name] = np.where(ok, (pref > 0).astype(int), -1)
        informative = ok & (np.abs(pref) > 0)
        m: dict[str, Any] = {"abstain_rate": float(1 - ok.mean()), "informative_rate": float(informative.mean())}
        if ok.any() and len(np.unique(labels[ok])) == 2 and np.nanstd(pref[ok]) > 0:
            m["auroc"] = float(roc_auc_score(labels[ok], pref[ok]))
            m["mcc"] = float(matthews_corrcoef(labels[ok], (pref[ok] > 0).astype(int)))
            m["ece"] = expected_calibration_error(y_n[ok], labels[ok])
            m["brier"] = brier_score(y_n[ok], labels[ok])
            m["reliability"] = reliability_bins(y_n[ok], labels[ok])
        per[name] = m
    oriented = de_oriented(rows, labels)
    if oriented is not None:  # knockdown questions: PerturbQA's per-gene AUROC of each verifier's preference
        from softverify.metrics.ranking import auc_per_gene

        neg, de_y, genes = oriented
        for name, pref in prefs.items():
            de_pref = np.where(neg, -pref, pref)
            ok = np.isfinite(de_pref)
            if ok.any():
                per[name]["per_gene"] = auc_per_gene(genes[ok], de_y[ok], de_pref[ok]).as_dict()
    names = list(prefs)
    rho = np.full((len(names), len(names)), np.nan)
    for a in range(len(names)):
        for b in range(len(names)):
            ok = np.isfinite(prefs[names[a]]) & np.isfinite(prefs[names[b]])
            if ok.sum() > 2 and np.std(prefs[names[a]][ok]) > 0 and np.std(prefs[names[b]][ok]) > 0:
                rho[a, b] = spearmanr(prefs[names[a]][ok], prefs[names[b]][ok]).statistic
    weights = [s.weight for s in specs]
    r_yes, r_no = composed_reward(s_yes, weights, thresholds), composed_reward(s_no, weights, thresholds)
    both = np.isfinite(r_yes) & np.isfinite(r_no)
    l_yes, l_no = pair_learner_values(s_yes, s_no, weights, thresholds, aggregation, advantage)
    l_both = np.isfinite(l_yes) & np.isfinite(l_no)
    fixed = fixed_strategy_rewards(r_yes, r_no, labels, follow)
    return {
        "n_questions": n, "positive_rate": float(labels.mean()) if n else float("nan"), "style": style,
        "verifiers": per, "names": names, "spearman": rho.tolist(), "thresholds_chosen": chosen,
        "fixed_strategies": fixed, "verdict": base_rate_verdict(fixed),
        "yes_push": float(np.mean(r_yes[both] > r_no[both])) if both.any() else float("nan"),
        "learner": {"aggregation": aggregation, "advantage": advantage,
                    "fixed_strategies": fixed_strategy_rewards(l_yes, l_no, labels, follow),
                    "yes_push": float(np.mean(l_yes[l_both] > l_no[l_both])) if l_both.any() else float("nan")},
    }


def report_markdown(rep: dict[str, Any]) -> str:
    lines = [f"Verifier report: {rep['n_questions']} questions, {rep['positive_rate']:.1%} yes, {rep['style']} style", "",
             "| verifier | AUROC | per-gene AUROC [95% CI] (genes) | MCC | ECE | Brier | abstains | informative |",
             "|---|---|---|---|---|---|---|---|"]
    f = lambda x: "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"  # noqa: E731

    def pg(d: dict | None) -> str:
        if not d or not np.isfinite(d.get("auc_per_gene", np.nan)):
            return "-"
        return f"{d['auc_per_gene']:.3f} [{d['auc_per_gene_lo']:.3f}, {d['auc_per_gene_hi']:.3f}] ({d['auc_per_gene_genes']})"

    for name, m in rep["verifiers"].items():
        lines.append(f"| {name} | {f(m.get('auroc'))} | {pg(m.get('per_gene'))} | {f(m.get('mcc'))} | {f(m.get('ece'))} "
                     f"| {f(m.get('brier'))} | {m['abstain_rate']:.1%} | {m['informative_rate']:.1%} |")
    if rep.get("lookups"):
        lines += ["", "Lookups on the same questions (what a table knows; per-gene 0.5 = knows nothing about "
                  "knockdowns): " + "; ".join(f"{k} per-gene {pg(v)}, pooled {f(v.get('auroc'))}"
                                              for k, v in rep["lookups"].items())]
    ln = rep.get("learner", {})
    agg = ln.get("aggregation", "-")
    lines += ["", f"| fixed strategy | expected composed reward | learner value ({agg}, {ln.get('advantage', '-')}) |",
              "|---|---|---|"]
    for k, v in rep["fixed_strategies"].items():
        lines.append(f"| {k} | {f(v)} | {f(ln.get('fixed_strategies', {}).get(k))} |")
    lines += ["", f"yes_push (questions on which the composed reward prefers yes): {rep['yes_push']:.1%}"
              + (f"; under {agg}: {ln['yes_push']:.1%}" if "yes_push" in ln else "")]
    if len(rep["names"]) > 1:
        lines += ["", "Spearman correlation of preferences: | " + " | ".join(rep["names"]) + " |"]
        for a, row in zip(rep["names"], rep["spearman"]):
            lines.append(f"| {a} | " + " | ".join(f(x) for x in row) + " |")
    if rep.get("verdict"):  # last, where a reader's eye lands: is a fixed answer paid about as well?
        lines += ["", rep["verdict"]["line"]]
    return "\n".join(lines)


def report_plot(rep: dict[str, Any], path) -> None:
    """Fixed-strategy rewards (and, for GDPO, the learner's values) beside the verifiers'
    reliability diagram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from softverify.metrics.calibration import draw_reliability

    ln = rep.get("learner", {})
    gdpo = ln.get("aggregation", "sum_then_normalize") != "sum_then_normalize"
    fig, axes = plt.subplots(1, 3 if gdpo else 2, figsize=(16 if gdpo else 11, 4.2))
    bars = [(rep["fixed_strategies"], "expected composed reward",
             f"fixed strategies ({rep['n_questions']} questions; yes_push {rep['yes_push']:.0%})")]
    if gdpo:
        bars.append((ln["fixed_strategies"], f"learner value ({ln['aggregation']}, {ln['advantage']})",
                     f"the same, as the learner receives them (yes_push {ln['yes_push']:.0%})"))
    for ax, (fs, xlabel, title) in zip(axes, bars):
        ax.barh(list(fs), [fs[k] for k in fs], color=["grey" if k.startswith("always") else "C0" for k in fs])
        ax.axvline(fs.get("follow_label", np.nan), color="black", ls=":", lw=1)
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=9)
    curves = {name: m["reliability"] for name, m in rep["verifiers"].items() if m.get("reliability")}
    draw_reliability(axes[-1], curves)
    axes[-1].set_xlabel("normalised score for 'yes' (read as P(yes))")
    axes[-1].set_title("reliability (95% Wilson intervals)", fontsize=9)
    if curves:
        axes[-1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
