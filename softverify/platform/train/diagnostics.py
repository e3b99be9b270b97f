"""Per-step verifier diagnostics: is each reward tracking the truth during training?

Pure functions over what the driver already holds (the score matrix, the parsed answers,
the labels), plus the scores of the same completions with the answer flipped:

- ``diag/corr_label/<v>``: Pearson correlation of verifier v's score with "the answer
  matches the experimental label" (0/1), over answered samples with a label;
- ``diag/disagree_hard/<v>``: for soft verifiers, the fraction of answered samples where v
  pays >= 0.5 but the answer is wrong, or < 0.5 but right;
- ``diag/reward_given/<v>`` vs ``diag/reward_opposite/<v>``: v's mean score for the answer
  the policy gave and for the opposite answer; a policy that follows v has given > opposite.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def verifier_diagnostics(names: Sequence[str], scores: np.ndarray, answers: np.ndarray, labels: np.ndarray,
                         opposite: np.ndarray | None = None, soft: Sequence[bool] | None = None) -> dict[str, float]:
    """``answers``: 1/0, -1 unanswered; ``labels``: 1/0, -1 unknown; ``opposite``: scores of
    the flipped completions (NaN where there was nothing to flip)."""
    out: dict[str, float] = {}
    answers, labels = np.asarray(answers), np.asarray(labels)
    known = (answers >= 0) & (labels >= 0)
    correct = (answers == labels).astype(float)
    for j, name in enumerate(names):
        col = scores[:, j]
        ok = known & np.isfinite(col)
        if ok.sum() > 2 and np.std(col[ok]) > 0 and np.std(correct[ok]) > 0:
            out[f"diag/corr_label/{name}"] = float(np.corrcoef(col[ok], correct[ok])[0, 1])
        if soft is not None and soft[j] and ok.any():
            out[f"diag/disagree_hard/{name}"] = float(np.mean((col[ok] >= 0.5) != (correct[ok] == 1)))
        if opposite is not None:
            both = np.isfinite(col) & np.isfinite(opposite[:, j]) & (answers >= 0)
            if both.any():
                out[f"diag/reward_given/{name}"] = float(col[both].mean())
                out[f"diag/reward_opposite/{name}"] = float(opposite[both, j].mean())
    return out
