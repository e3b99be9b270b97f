"""Parsing of the rbio1 answer format: ``<think> ... </think> <answer> yes|no </answer>``.

Kept separate from any verifier because the hard, soft and evaluation code all need the
same notion of "what did the model answer"; one regex, one place.
"""
from __future__ import annotations

import numbers
import re
from typing import Sequence

import numpy as np

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


#: What closes an unanswered turn so that the next token is the answer (see :func:`forcing_suffix`).
FORCE_CLOSE_THINK = "\n</think>\n<answer>"
FORCE_OPEN_ANSWER = "\n<answer>"


def forcing_suffix(text: str) -> str:
    """What to append to an unanswered assistant turn so the next token is the answer:
    ``</think>`` (when the reasoning is still open) then ``<answer>``. The one rule behind
    eval's forced reading and the rollout's answer forcing (``rollout.force_answer``)."""
    return FORCE_OPEN_ANSWER if "</think>" in text else FORCE_CLOSE_THINK


def forced_turn_tokens(tokenizer, eos_ids, text: str, token_ids) -> tuple[list[int], list[int]]:
    """An unanswered turn re-opened for its answer: ``(its token ids without trailing EOS,
    the forcing suffix's token ids)``. ``text`` is the whole assistant turn so far
    (assistant prefix included): it decides the suffix (:func:`forcing_suffix`). The EOS
    goes because a turn that ended cannot be continued; the suffix tokens then lead
    straight to the answer word."""
    ids = list(token_ids)
    while ids and ids[-1] in eos_ids:
        ids.pop()
    return ids, list(tokenizer(forcing_suffix(text), add_special_tokens=False)["input_ids"])


def candidate_ids(tokenizer, answers: Sequence[str], close: str) -> list[list[int]]:
    """Each closed-set answer's completion tokens, ``answer + close`` (e.g. ``yes</answer>``):
    the tokens a sampled answer ends with. The learner finds the candidate span by this
    length at the end of every enumerated completion (CoT enumerate)."""
    return [list(tokenizer(a + close, add_special_tokens=False)["input_ids"]) for a in answers]


def answer_to_int(answer: str | None) -> int | None:
    return None if answer is None else int(answer == "yes")


_LABEL_WORDS = {"1": 1, "yes": 1, "true": 1, "0": 0, "no": 0, "false": 0}
LABEL_VALUES = "0/1, true/false or \"yes\"/\"no\""


def label_to_int(value) -> int:
    """A yes/no label as 0/1. Rows come from users' JSONL as well as from PerturbQA, so
    0/1, booleans and the words yes/no/true/false are all accepted; anything else is an
    error naming the value (``int("yes")``'s message names neither the field nor the fix)."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, numbers.Real) and value in (0, 1):  # numpy's integers and floats too (pandas rows)
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _LABEL_WORDS:
        return _LABEL_WORDS[value.strip().lower()]
    raise ValueError(f"label {value!r} is not a yes/no label; expected {LABEL_VALUES}")


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


def answer_token_start(tokenizer, completion_ids: Sequence[int], tag: str = "<answer>") -> int | None:
    """Index of the completion token where the last ``tag`` starts (None if absent).
    Found by binary search over decoded prefixes, so tokenisation of the tag itself
    (``<``, ``answer``, ``>`` or merged with a newline) does not matter."""
    ids = list(completion_ids)
    text = tokenizer.decode(ids)
    c = text.rfind(tag)
    if c < 0:
        return None
    lo, hi = 1, len(ids)  # smallest k with len(decode(ids[:k])) > c
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[:mid])) > c:
            hi = mid
        else:
            lo = mid + 1
    return lo - 1
