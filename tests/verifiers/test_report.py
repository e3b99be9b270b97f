"""The verifier report: fixed-strategy rewards by hand, and on a real world model."""
from __future__ import annotations

import numpy as np
import pytest

from softverify.bio.worldmodel import WorldModel
from softverify.metrics.calibration import (brier_score, expected_calibration_error, plot_reliability, reliability_bins,
                                            wilson_interval)
from softverify.config import VerifierSpec
from softverify.rewards import threshold_normalize
from softverify.verifiers.report import report_markdown, verifier_report


def test_fixed_strategy_rewards_hand_computed():
    rows = [{"question": "q", "label": y, "pert": "A", "gene": "B"} for y in (1, 0, 1, 1)]
    rep = verifier_report([VerifierSpec(kind="hard"), VerifierSpec(kind="format", weight=1.0)], rows)
    fs = rep["fixed_strategies"]
    # hard pays 1 for the right answer; format pays 1 for every well-formed direct answer; mean of the two
    assert fs["always_yes"] == pytest.approx((0.75 + 1) / 2)
    assert fs["always_no"] == pytest.approx((0.25 + 1) / 2)
    assert fs["follow_label"] == pytest.approx(1.0) and fs["follow_hard"] == pytest.approx(1.0)
    assert fs["follow_format"] == fs["always_no"]  # format prefers neither: following it says no
    assert rep["yes_push"] == pytest.approx(0.75)
    assert rep["verifiers"]["hard"]["auroc"] == 1.0 and rep["verifiers"]["format"]["informative_rate"] == 0.0
    assert "always_no" in report_markdown(rep)
    # the default aggregation hands the learner the weighted-mean reward itself
    assert rep["learner"]["fixed_strategies"] == pytest.approx(fs)


def test_gdpo_learner_values_hand_computed():
    rows = [{"question": "q", "label": y, "pert": "A", "gene": "B"} for y in (1, 0, 1, 1)]
    rep = verifier_report([VerifierSpec(kind="hard"), VerifierSpec(kind="format", weight=1.0)], rows,
                          aggregation="normalize_then_sum", advantage="grpo")
    ln = rep["learner"]
    # per question, group {yes, no}: hard's scores (1, 0) or (0, 1) normalise to +-1 (std 0.5, eps 1e-6); format's
    # (1, 1) to 0; their mean +-0.5 is rescaled by its batch std 0.5 to +-1: +1 for the right answer
    assert ln["aggregation"] == "normalize_then_sum"
    assert ln["fixed_strategies"]["always_yes"] == pytest.approx((1 - 1 + 1 + 1) / 4, abs=1e-5)
    assert ln["fixed_strategies"]["always_no"] == pytest.approx(-0.5, abs=1e-5)
    assert ln["fixed_strategies"]["follow_label"] == pytest.approx(1.0, abs=1e-5)
    assert ln["fixed_strategies"]["follow_format"] == pytest.approx(-0.5, abs=1e-5)
    assert ln["yes_push"] == pytest.approx(0.75)
    md = report_markdown(rep)
    assert "learner value (normalize_then_sum, grpo)" in md and "under normalize_then_sum: 75.0%" in md


def test_gdpo_learner_values_with_a_world_model_by_hand(wm_dir, tmp_path):
    d, tr = wm_dir
    rows = tr.sample(300, random_state=3).to_dict("records")
    wm = WorldModel.load(d)
    pn = threshold_normalize(wm.predict_proba([r["pert"] for r in rows], [r["gene"] for r in rows]), wm.threshold)
    y = np.array([r["label"] for r in rows])
    specs = [VerifierSpec(kind="hard"), VerifierSpec(kind="world_model", params={"model_dir": str(d)}),
             VerifierSpec(kind="format", weight=0.25)]
    rep = verifier_report(specs, rows, aggregation="normalize_then_sum", advantage="drgrpo")
    # Dr. GRPO on the pair {yes, no}: hard +-0.5 (sign of the label), the world model (pn - (1 - pn)) / 2 = pn - 0.5,
    # format 0; weighted mean over the verifiers that scored; then divided by the std over all 2n values
    hard = np.where(y == 1, 0.5, -0.5)
    wmv = pn - 0.5
    v_yes = np.where(np.isfinite(wmv), (hard + np.nan_to_num(wmv)) / 2.25, hard / 1.25)
    sd = np.concatenate([v_yes, -v_yes]).std()
    fs = rep["learner"]["fixed_strategies"]
    assert fs["always_yes"] == pytest.approx(np.mean(v_yes) / sd)
    assert fs["always_no"] == pytest.approx(-np.mean(v_yes) / sd)
    assert fs["follow_label"] == pytest.approx(np.mean(np.where(y == 1, v_yes, -v_yes)) / sd)
    from softverify.verifiers.report import report_plot

    report_plot(rep, tmp_path / "r.png")  # the three-panel GDPO figure
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_world_model_report_matches_its_p(wm_dir):
    d, tr = wm_dir
    rows = tr.sample(400, random_state=5).to_dict("records")
    wm = WorldModel.load(d)
    p = wm.predict_proba([r["pert"] for r in rows], [r["gene"] for r in rows])
    rep = verifier_report([VerifierSpec(kind="world_model", params={"model_dir": str(d)})], rows)
    pn = threshold_normalize(p, wm.threshold)
    ok = np.isfinite(pn)
    y = np.array([r["label"] for r in rows])
    assert rep["fixed_strategies"]["always_yes"] == pytest.approx(np.mean(pn[ok]))
    assert rep["fixed_strategies"]["always_no"] == pytest.approx(np.mean(1 - pn[ok]))
    assert rep["fixed_strategies"]["follow_world_model"] == pytest.approx(np.mean(np.maximum(pn[ok], 1 - pn[ok])))
    assert rep["verifiers"]["world_model"]["ece"] == pytest.approx(expected_calibration_error(pn[ok], y[ok]))
    assert rep["yes_push"] == pytest.approx(np.mean(pn[ok] > 0.5))
    # the median policy, resolved over these questions, makes the push neutral
    med = verifier_report([VerifierSpec(kind="world_model", params={"model_dir": str(d), "threshold": "median"})], rows)
    assert med["yes_push"] == pytest.approx(0.5, abs=0.01)


def test_calibration_by_hand():
    p = np.array([0.05, 0.15, 0.95, 0.85])
    y = np.array([0, 1, 1, 1])
    # bins [0, .1): p .05 rate 0 -> gap .05; [.1, .2): .15 vs 1 -> .85; [.8, .9): .85 vs 1 -> .15; [.9, 1]: .95 vs 1 -> .05
    assert expected_calibration_error(p, y) == pytest.approx((0.05 + 0.85 + 0.15 + 0.05) / 4)
    assert brier_score(p, y) == pytest.approx(np.mean((p - y) ** 2))


def test_wilson_interval_and_reliability_plot_by_hand(tmp_path):
    # z = 1.96: 0 of 10 -> (0, 0.2775); 5 of 10 -> (0.2366, 0.7634) (the textbook values)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    assert all(np.isnan(wilson_interval(0, 0)))
    with pytest.raises(ValueError, match="k=11"):
        wilson_interval(11, 10)
    bins = reliability_bins(np.array([0.05] * 10 + [0.55] * 10), np.array([0] * 10 + [1] * 5 + [0] * 5))
    assert (bins[0]["rate_lo"], bins[5]["rate_lo"]) == pytest.approx((0.0, 0.23659), abs=1e-4)
    assert bins[1]["n"] == 0 and np.isnan(bins[1]["rate_hi"])
    plot_reliability({"a": bins}, tmp_path / "rel.png", "hand")
    assert (tmp_path / "rel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_world_model_report_gives_per_gene_auroc_on_the_de_scale(wm_dir):
    """On knockdown questions the report's per-gene AUROC is PerturbQA's on the DE scale: a
    negated question ("... unchanged?") flips both its label and the verifier's preference,
    so negating half the questions (labels flipped with them) leaves the number unchanged."""
    from softverify.metrics.ranking import auc_per_gene

    d, tr = wm_dir
    hubs = tr.groupby("gene")["label"].sum().nlargest(20).index  # whole target genes with both labels
    rows = tr[tr["gene"].isin(hubs)].to_dict("records")
    wm = WorldModel.load(d)
    p = wm.predict_proba([r["pert"] for r in rows], [r["gene"] for r in rows])
    y = np.array([r["label"] for r in rows])
    want = auc_per_gene([r["gene"] for r in rows], y, p)
    spec = [VerifierSpec(kind="world_model", params={"model_dir": str(d), "threshold": "median"})]
    rep = verifier_report(spec, rows)
    (m,) = rep["verifiers"].values()
    assert m["per_gene"]["auc_per_gene"] == pytest.approx(want.auc_per_gene)
    assert m["per_gene"]["auc_per_gene_genes"] == want.genes > 5
    neg = [dict(r, negated=True, label=1 - r["label"]) if i % 2 else r for i, r in enumerate(rows)]
    (mn,) = verifier_report(spec, neg)["verifiers"].values()
    assert mn["per_gene"]["auc_per_gene"] == pytest.approx(want.auc_per_gene)
    assert "per-gene AUROC" in report_markdown(rep) and f"{want.auc_per_gene:.3f}" in report_markdown(rep)
    assert "per_gene" not in verifier_report([VerifierSpec(kind="hard")],
                                             [{"question": "q", "label": 1}, {"question": "q", "label": 0}])["verifiers"]["hard"]


def _questions(labels) -> list[dict]:
    return [{"question": f"q{i}", "label": int(y), "pert": "A", "gene": f"G{i % 3}"} for i, y in enumerate(labels)]


def test_verdict_names_the_base_rate_trap_on_a_hand_made_verifier_set():
    """90% "no" questions; the format verifier (weight 1) pays every well-formed answer 1, the
    hard verifier (weight 0.1) pays the label. Composed: follow the label earns 1, always no
    (0.1 * 0.9 + 1) / 1.1 = 0.99091, a gap of 0.00909 < 0.02: the trap. With the hard verifier
    alone the gap is 1 - 0.9 = 0.1: no trap."""
    from softverify.verifiers.report import TRAP_MARGIN, base_rate_check, base_rate_verdict

    rows = _questions([1] + [0] * 9)
    trap_set = [VerifierSpec(kind="hard", weight=0.1), VerifierSpec(kind="format", weight=1.0)]
    rep = verifier_report(trap_set, rows)
    v = rep["verdict"]
    assert v["trap"] and v["fixed"] == "always_no" and v["informed"] in ("follow_label", "follow_hard")
    assert v["fixed_reward"] == pytest.approx((0.1 * 0.9 + 1) / 1.1) and v["gap"] == pytest.approx(1 - 1.09 / 1.1)
    md = report_markdown(rep)
    last = md.splitlines()[-1]
    assert last.startswith("verdict: BASE-RATE TRAP: always no earns 0.991, within 0.02 of the best informed strategy")
    assert "threshold: median" in last and "data.stratify_by" in last

    fine = verifier_report([VerifierSpec(kind="hard")], rows)
    assert not fine["verdict"]["trap"] and fine["verdict"]["gap"] == pytest.approx(0.1)
    assert report_markdown(fine).splitlines()[-1] == (
        "verdict: no base-rate trap: follow label earns 1.000, 0.100 more than always no (0.900; margin 0.02)")

    # the margin is the line between the two: a gap inside it is the trap, one beyond it is not
    assert base_rate_verdict({"always_yes": 0.5, "always_no": 0.7, "follow_label": 0.7 + 0.5 * TRAP_MARGIN})["trap"]
    assert not base_rate_verdict({"always_yes": 0.5, "always_no": 0.7, "follow_label": 0.7 + 1.5 * TRAP_MARGIN})["trap"]
    # the trainer's cheap check agrees with the full report, with verifiers built once by the caller
    from softverify.verifiers.suite import check_specs

    built = check_specs(trap_set)
    cheap = base_rate_check(trap_set, rows, built=built)
    assert cheap["fixed_strategies"] == pytest.approx(rep["fixed_strategies"]) and cheap["verdict"]["trap"]


def test_verifiers_report_cli_prints_the_verdict(tmp_path, capsys):
    import json

    from softverify.cli import main

    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps(r) + "\n" for r in _questions([1] + [0] * 9)))
    rc = main(["verifiers", "report", "--questions", str(q), "--set",
               "verifiers=[{kind: hard, weight: 0.1}, {kind: format, weight: 1.0}]"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("verdict: BASE-RATE TRAP: always no earns 0.991")
