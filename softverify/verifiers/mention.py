"""Mention reward: does the reasoning name the genes the question is about?

A cheap, dense shaping signal from DESIGN.md: reasoning that never mentions the perturbed
or the target gene cannot be about them. Score = fraction of the configured metadata
genes (default pert and gene) that appear as whole words in the reasoning
(``<gene_info>`` / ``<think>``, see :func:`reasoning_text`), case-insensitively.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from softverify.types import Sample
from softverify.verifiers.base import Verifier, register
from softverify.verifiers.textparts import reasoning_text

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-\.]*[A-Za-z0-9]|[A-Za-z0-9]")


@register("mention")
class MentionVerifier(Verifier):
    """Fraction of ``keys`` genes mentioned; abstains when the row names no gene."""

    def __init__(self, name: str | None = None, keys: Sequence[str] = ("pert", "gene")):
        super().__init__(name)
        if not keys:
            raise ValueError("mention verifier needs at least one metadata key in params.keys")
        self.keys = list(keys)

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        out = np.full(len(samples), np.nan)
        for i, s in enumerate(samples):
            genes = [str(s.metadata[k]).upper() for k in self.keys if s.metadata.get(k)]
            if not genes:
                continue
            words = {w.upper() for w in _WORD.findall(reasoning_text(s.completion))}
            out[i] = sum(g in words for g in genes) / len(genes)
        return out
