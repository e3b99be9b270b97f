"""VerifierSuite: a run's verifiers built once, Ray-free, scoring samples to the matrix and
the per-sample reward exactly as training composes it.

One class for every place that scores answers outside the pool's fan-out (``/v1/verify``
today), so serving and training cannot drift apart: verifiers are built from their specs
with thresholds (:func:`build_from_spec`), every column is checked against the score
contract, and the reward is the same threshold normalisation and weighted mean over the
verifiers that did not abstain (:func:`softverify.rewards.compose`'s reward).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from softverify.config import VerifierSpec
from softverify.rewards import threshold_normalize, weighted_mean_available
from softverify.types import Sample
from softverify.verifiers.base import Verifier, build_from_spec, composition_thresholds


def check_scores(name: str, scores, n: int) -> np.ndarray:
    """The verifier contract: shape ``[n]``, values in [0, 1] or NaN."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"verifier {name!r} returned shape {s.shape}, expected ({n},)")
    bad = ~np.isnan(s) & ((s < 0) | (s > 1))
    if bad.any():
        raise ValueError(f"verifier {name!r} returned scores outside [0, 1]: {s[bad][:5]}")
    return s


class VerifierSuite:
    def __init__(self, specs: Sequence[VerifierSpec]):
        self.specs = list(specs)
        self.names = [s.display_name for s in self.specs]
        dup = sorted({n for n in self.names if self.names.count(n) > 1})
        if dup:
            raise ValueError(f"verifier names must be unique; repeated: {dup} (set 'name' to tell them apart)")
        self.verifiers: dict[str, Verifier] = {s.display_name: build_from_spec(s) for s in self.specs}
        policy = [n for n, v in self.verifiers.items() if v.needs_policy]
        if policy:
            raise ValueError(f"verifier(s) {policy} need the policy's logprobs; a VerifierSuite cannot host them")
        self.weights = np.array([s.weight for s in self.specs], dtype=np.float64)
        self.thresholds = composition_thresholds(self.specs)

    def score(self, samples: Sequence[Sample], names: Sequence[str] | None = None) -> np.ndarray:
        """``[n_samples, n_names]`` (all verifiers by default), NaN where one abstains."""
        names = list(names or self.names)
        cols = [check_scores(n, self.verifiers[n].score(list(samples)), len(samples)) for n in names]
        return np.column_stack(cols) if cols else np.zeros((len(samples), 0))

    def rewards(self, scores: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
        """Per-sample reward of ``scores`` (columns = ``names``): each column threshold-
        normalised as in training, then the weighted mean over those that scored."""
        idx = [self.names.index(n) for n in (names or self.names)]
        normed = np.column_stack([threshold_normalize(scores[:, k], self.thresholds[j]) for k, j in enumerate(idx)])
        return weighted_mean_available(normed, self.weights[idx])
