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


class GoodhartMonitor:
    """Warns when the teacher's pay keeps rising while what the student knows falls.

    At each periodic eval it is fed the mean training reward of a soft verifier since the
    last eval (the teacher's pay) and the student's per-gene AUROC on labelled validation
    questions. A student that games its teacher (learns what the teacher pays for, not what
    the labels say) shows the first rising and the second falling. After ``window``
    consecutive evals where the reward rose and the per-gene AUROC fell, by more than
    ``tol`` each, :meth:`update` returns a warning line; otherwise None. RL frameworks log
    the reward; none of them watches it against the truth.
    """

    def __init__(self, window: int = 3, tol: float = 0.0):
        if window < 2:
            raise ValueError(f"GoodhartMonitor window must be >= 2 evals, got {window}")
        self.window, self.tol = window, tol
        self.history: list[tuple[int, float, float]] = []
        self._pending: list[float] = []

    def add_reward(self, reward: float | None) -> None:
        """One training step's teacher reward (NaN/None are skipped)."""
        if reward is not None and np.isfinite(reward):
            self._pending.append(float(reward))

    def update(self, step: int, auc_per_gene: float | None) -> str | None:
        """Close the interval since the last eval; a warning line when the pattern held."""
        reward = float(np.mean(self._pending)) if self._pending else float("nan")
        self._pending = []
        if auc_per_gene is None or not np.isfinite(auc_per_gene) or not np.isfinite(reward):
            return None
        self.history.append((step, reward, float(auc_per_gene)))
        last = self.history[-self.window:]
        if len(last) < self.window:
            return None
        rising = all(b[1] - a[1] > self.tol for a, b in zip(last, last[1:]))
        falling = all(a[2] - b[2] > self.tol for a, b in zip(last, last[1:]))
        if not (rising and falling):
            return None
        (s0, r0, g0), (s1, r1, g1) = last[0], last[-1]
        return (f"Goodhart warning: from step {s0} to {s1} the teacher's reward rose {r0:.3f} -> {r1:.3f} while the "
                f"validation per-gene AUROC fell {g0:.3f} -> {g1:.3f}: the policy is learning what the teacher pays "
                "for, not what the labels say")
