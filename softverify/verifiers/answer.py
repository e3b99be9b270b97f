"""Parsing of the rbio1 answer format: ``<think> ... </think> <answer> yes|no </answer>``.

Kept separate from any verifier because the hard, soft and evaluation code all need the
same notion of "what did the model answer"; one regex, one place.
"""
from __future__ import annotations

import re

ANSWER_RE = re.compile(r"<answer>\s*(yes|no)\s*</answer>", re.IGNORECASE)


def parse_answer(completion: str) -> str | None:
    """Return ``"yes"``/``"no"`` for the *last* well-formed answer tag, else ``None``.

    The last one counts because a model that revises itself ("... <answer>no</answer>
    wait ... <answer>yes</answer>") commits to its final statement. Completions with no
    well-formed tag are *unanswered*.
    """
    found = ANSWER_RE.findall(completion)
    if not found:
        return None
    return found[-1].lower()


def answer_to_int(answer: str | None) -> int | None:
    return None if answer is None else int(answer == "yes")


def flip_answer(completion: str) -> str | None:
    """The completion with its last answer swapped (yes <-> no), or None when unanswered.
    Scoring both tells how much a verifier pays for the answer the policy gave over the
    opposite one (a training diagnostic)."""
    found = list(ANSWER_RE.finditer(completion))
    if not found:
        return None
    m = found[-1]
    word = m.group(1)
    other = {"yes": "no", "no": "yes"}[word.lower()]
    if word[0].isupper():
        other = other.capitalize()
    return completion[: m.start(1)] + other + completion[m.end(1):]
