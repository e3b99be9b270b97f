"""The vectorised ranking metrics equal sklearn's, point values and bootstrap intervals (the
intervals drawn as before, one sklearn call per resample), ties and one-class resamples included."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, matthews_corrcoef, roc_auc_score

from softverify.evaluation.scores import (auroc_rows, average_precision_rows, bootstrap_ci, mcc_rows,
                                                   score_metrics)


def _sk(metric):
    def stat(y, s):
        if metric is matthews_corrcoef:
            return float(metric(y, s))
        return float(metric(y, s)) if len(np.unique(y)) == 2 else float("nan")
    return stat


@pytest.mark.parametrize("n", [6, 40])
def test_rows_equal_sklearn_with_ties_and_one_class_rows(n):
    rng = np.random.default_rng(n)
    y = rng.integers(0, 2, (200, n))
    s = rng.integers(0, 5, (200, n)).astype(float)  # heavy ties
    pred = rng.integers(0, 2, (200, n))
    y[0], y[1] = 0, 1  # one class only: NaN (AUROC, AP), 0 (MCC)
    pred[2] = 1
    for rows_fn, sk in ((auroc_rows, roc_auc_score), (average_precision_rows, average_precision_score)):
        want = np.array([_sk(sk)(a, b) for a, b in zip(y, s)])
        np.testing.assert_allclose(rows_fn(y, s), want, rtol=0, atol=1e-12, equal_nan=True)
    want = np.array([matthews_corrcoef(a, b) for a, b in zip(y, pred)])
    np.testing.assert_allclose(mcc_rows(y, pred), want, rtol=0, atol=1e-12)


def test_bootstrap_intervals_equal_the_per_resample_sklearn_loop():
    rng = np.random.default_rng(1)
    y, s, a = rng.integers(0, 2, 60), np.round(rng.normal(size=60), 1), rng.integers(0, 2, 60)
    m = score_metrics(y, s, a, n_boot=300, seed=3)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["auprc"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    for key, sk, b in (("auroc", roc_auc_score, s), ("auprc", average_precision_score, s), ("mcc", matthews_corrcoef, a)):
        lo, hi = bootstrap_ci(_sk(sk), y, b, n_boot=300, seed=3)
        assert (m[f"{key}_lo"], m[f"{key}_hi"]) == pytest.approx((lo, hi), abs=1e-12), key
