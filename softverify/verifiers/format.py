"""Format reward: does the completion follow ``<think> … </think> <answer> yes|no </answer>``?

Partial credit instead of all-or-nothing: a small model rarely emits the full format at
first, and a graded signal gives GRPO groups some variance to learn from.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from softverify.types import Sample
from softverify.task.answer import ANSWER_RE
from softverify.verifiers.base import Verifier, register

_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)


def format_score(text: str, max_chars: int = 4000) -> float:
    """Mean of six checks, each 0 or 1 (a direct-style turn, one that starts with
    ``<answer>``, has no think block to check: the mean of checks 3, 5 and 6):

    1. exactly one ``<think>`` and one ``</think>``;
    2. ``<think>`` opens before ``</think>`` closes;
    3. exactly one ``<answer>`` and one ``</answer>``;
    4. the answer block comes after the think block;
    5. the answer content is ``yes`` or ``no`` (the parseable form);
    6. the text is at most ``max_chars`` long and nothing but whitespace follows ``</answer>``.
    """
    checks = []
    direct = text.lstrip().lower().startswith("<answer>")
    t_open = [m.start() for m in _THINK_OPEN.finditer(text)]
    t_close = [m.start() for m in _THINK_CLOSE.finditer(text)]
    a_open = [m.start() for m in _ANSWER_OPEN.finditer(text)]
    a_close = [m.start() for m in _ANSWER_CLOSE.finditer(text)]
    checks.append(len(t_open) == 1 and len(t_close) == 1)
    checks.append(bool(t_open and t_close and t_open[0] < t_close[0]))
    checks.append(len(a_open) == 1 and len(a_close) == 1)
    checks.append(bool(t_close and a_open and t_close[-1] < a_open[0]))
    answers = ANSWER_RE.findall(text)
    checks.append(len(answers) == 1)
    tail_ok = bool(a_close) and text[a_close[-1] + len("</answer>"):].strip() == ""
    checks.append(len(text) <= max_chars and tail_ok)
    if direct:
        checks = [checks[2] and not t_open and not t_close, checks[4], checks[5]]
    return float(np.mean(checks))


@register("format")
class FormatVerifier(Verifier):
    """Graded format score in [0, 1]; never abstains. A completion whose answer the rollout
    forced (``rollout.force_answer``) is judged as the policy wrote it, before the inserted
    ``</think>`` ``<answer>`` (``Sample.unforced_completion``): forcing must not pay for the
    layout the policy failed to produce, or closing its own turn would earn nothing."""

    def __init__(self, name: str | None = None, max_chars: int = 4000):
        super().__init__(name)
        if max_chars <= 0:
            raise ValueError(f"format verifier max_chars must be > 0, got {max_chars}")
        self.max_chars = max_chars

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        return np.array([format_score(s.completion if s.unforced_completion is None else s.unforced_completion,
                                      self.max_chars) for s in samples], dtype=np.float64)


@register("length")
class LengthVerifier(Verifier):
    """Brevity reward: 1 for an empty completion, falling linearly to 0 at ``max_chars``.

    Useful on its own to curb rambling (with a small weight), and as a dense signal that
    varies within every group, which makes it a good smoke-test reward for tiny models.
    """

    def __init__(self, name: str | None = None, max_chars: int = 2000):
        super().__init__(name)
        if max_chars <= 0:
            raise ValueError(f"length verifier max_chars must be > 0, got {max_chars}")
        self.max_chars = max_chars

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        n = np.array([len(s.completion) for s in samples], dtype=np.float64)
        return np.clip(1.0 - n / self.max_chars, 0.0, 1.0)
