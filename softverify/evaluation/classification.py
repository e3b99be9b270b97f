"""Evaluation on held-out yes/no questions: the metrics that matter on imbalanced data.

The PerturbQA data are ~13% positive, so accuracy alone is meaningless; we report TPR
(recall), TNR, precision, F1, MCC and balanced accuracy, plus the unanswered rate.
An unanswered question counts as a wrong answer (a positive becomes a false negative, a
negative a false positive): a model must not look better by refusing to answer.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from softverify.metrics.confusion import confusion_counts, rates
from softverify.task.answer import answer_to_int, parse_answer


def classification_metrics(labels: Sequence[int], answers: Sequence[int | None]) -> dict[str, float]:
    y = np.asarray(labels, dtype=int)
    ans = list(answers)
    if len(ans) != len(y):
        raise ValueError(f"{len(y)} labels but {len(ans)} answers")
    unanswered = np.array([a is None for a in ans])
    pred = np.array([(1 - t) if a is None else int(a) for a, t in zip(ans, y)], dtype=int)
    tp, tn, fp, fn = confusion_counts(y, pred)
    return {
        "n": int(len(y)), **rates(tp, tn, fp, fn),
        "accuracy": (tp + tn) / len(y) if len(y) else float("nan"),
        "unanswered_rate": float(unanswered.mean()) if len(y) else float("nan"),
        "tp": tp, "tn": tn, "fp": fp, "fn": fn,
    }


def metrics_from_completions(labels: Sequence[int], completions: Sequence[str]) -> dict[str, float]:
    return classification_metrics(labels, [answer_to_int(parse_answer(c)) for c in completions])


def majority_answers(answers_per_question: Sequence[Sequence[int | None]]) -> list[int | None]:
    """With N samples per question: the majority answer (ties and all-unanswered -> None)."""
    out = []
    for ans in answers_per_question:
        votes = [a for a in ans if a is not None]
        if not votes:
            out.append(None)
            continue
        yes = sum(votes)
        no = len(votes) - yes
        out.append(None if yes == no else int(yes > no))
    return out


def format_table(metrics: dict[str, float]) -> str:
    keys = ["n", "tpr", "tnr", "precision", "f1", "mcc", "balanced_accuracy", "unanswered_rate"]
    keys += [k for k in ("auroc", "auprc", "spearman_ref") if k in metrics]
    w = max(len(k) for k in keys)
    lines = [f"{'metric':<{w}}  value", f"{'-' * w}  -----"]
    for k in keys:
        v = metrics.get(k)
        ci = f"  [{metrics[k + '_lo']:.3f}, {metrics[k + '_hi']:.3f}]" if k + "_lo" in metrics else ""
        lines.append((f"{k:<{w}}  {v:.4f}" if isinstance(v, float) else f"{k:<{w}}  {v}") + ci)
    return "\n".join(lines)
