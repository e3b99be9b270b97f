"""Which part of a completion states facts, and the answer-to-reward mapping of soft verifiers.

Knowledge and mention verifiers judge the model's *reasoning*, not its answer: the text of
a ``<gene_info>`` section when the model wrote one (a prompt may ask for it), else the
``<think>`` block, else everything before ``<answer>``. Soft verifiers turn a probability
that the true answer is "yes" into a reward the same way (p for yes, 1 - p for no).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from softverify.task.answer import parse_answer

_GENE_INFO = re.compile(r"<gene_info>(.*?)(?:</gene_info>|$)", re.IGNORECASE | re.DOTALL)
_THINK = re.compile(r"<think>(.*?)(?:</think>|<answer>|$)", re.IGNORECASE | re.DOTALL)
_ANSWER = re.compile(r"<answer>", re.IGNORECASE)


def reasoning_text(completion: str) -> str:
    """The stated facts: ``<gene_info>`` > ``<think>`` > text before ``<answer>``."""
    m = _GENE_INFO.search(completion)
    if m:
        return m.group(1).strip()
    m = _THINK.search(completion)
    if m:
        return m.group(1).strip()
    a = _ANSWER.search(completion)
    return (completion[: a.start()] if a else completion).strip()


def answers_as_int(samples: Sequence) -> np.ndarray:
    """1 for yes, 0 for no, -1 for unanswered (no well-formed answer tag)."""
    out = np.full(len(samples), -1, dtype=np.int8)
    for i, s in enumerate(samples):
        a = parse_answer(s.completion)
        if a is not None:
            out[i] = a == "yes"
    return out


def reward_from_p_yes(p_yes: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """p for a yes, 1 - p for a no, 0 for an unanswered completion (it said nothing the
    soft verifier could agree with), NaN where p is NaN (the verifier abstains)."""
    r = np.where(answers == 1, p_yes, np.where(answers == 0, 1.0 - p_yes, 0.0))
    return np.where(np.isnan(p_yes), np.nan, r)


def metadata_column(samples: Sequence, key: str) -> list:
    return [s.metadata.get(key) for s in samples]


def task_mask(samples: Sequence, tasks: Sequence[str] | None) -> np.ndarray:
    """True where the sample's task is one the verifier judges (None = every task; rows
    without a ``task`` field count as the rbio1 knockdown task ``de``)."""
    if tasks is None:
        return np.ones(len(samples), dtype=bool)
    allowed = set(tasks)
    return np.array([(s.metadata.get("task") or "de") in allowed for s in samples], dtype=bool)


def strip_prompt_overlap(prompt: str, completion: str, max_chars: int = 256) -> str:
    """Drop the start of ``completion`` that the prompt already ends with (the rollout
    worker puts the assistant prefix, e.g. ``<think>\\n``, in both)."""
    for k in range(min(len(completion), max_chars), 0, -1):
        if prompt.endswith(completion[:k]):
            return completion[k:]
    return completion
