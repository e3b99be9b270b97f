"""Hard verifier: the experimental label is the ground truth."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from softverify.types import Sample
from softverify.task.answer import answer_to_int, label_to_int, parse_answer
from softverify.verifiers.base import Verifier, register


@register("hard")
class HardLabelVerifier(Verifier):
    """1 if the parsed answer equals ``metadata[label_key]``, 0 if it differs or is missing.

    Abstains (NaN) when the row carries no label, so the same verifier can sit in a mixed
    dataset where some tasks have no experimental ground truth.
    """

    def __init__(self, name: str | None = None, label_key: str = "label"):
        super().__init__(name)
        self.label_key = label_key

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        out = np.empty(len(samples), dtype=np.float64)
        for i, s in enumerate(samples):
            label = s.metadata.get(self.label_key)
            if label is None or (isinstance(label, float) and np.isnan(label)):
                out[i] = np.nan
                continue
            try:
                truth = label_to_int(label)
            except ValueError as e:
                raise ValueError(f"sample {s.prompt_id!r}, field {self.label_key!r}: {e}") from None
            ans = answer_to_int(parse_answer(s.completion))
            out[i] = 1.0 if ans is not None and ans == truth else 0.0
        return out
