"""The verifier report: fixed-strategy rewards by hand, and on a real world model."""
from __future__ import annotations

import numpy as np
import pytest

from softverify.bio.worldmodel import WorldModel
from softverify.calibration import brier_score, expected_calibration_error
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
