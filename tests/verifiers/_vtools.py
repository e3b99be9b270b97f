"""Helpers shared by the verifier tests (hand-written completions and samples)."""
from __future__ import annotations

import numpy as np

from softverify.types import Sample


def completion(answer: str | None, think: str = "Some reasoning.") -> str:
    tail = f"\n<answer>\n{answer}\n</answer>" if answer is not None else "\nI am not sure."
    return f"<think>\n{think}\n</think>{tail}"


def sample(text: str, **meta) -> Sample:
    meta.setdefault("task", "de")
    return Sample(prompt_id="p", prompt="", completion=text, metadata=meta)


def nan_equal(a, b) -> bool:
    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), equal_nan=True, atol=1e-9))
