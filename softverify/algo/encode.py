"""The learner's forward over a micro-batch of samples: one path for every mode.

Logprobs (and entropies) of the samples' completions, on the shared-prompt path (each
distinct prompt encoded once, its KV reused) unless ``learner.shared_prompt`` is off or
gradient checkpointing is on, when the packed path encodes every row in full.
"""
from __future__ import annotations

from typing import Sequence

from softverify.learner.seqbatch import (MIN_SHARED_PREFIX, CompletionBatch, completion_logprobs_packed,
                                         completion_logprobs_shared)
from softverify.types import Sample


def shared_prefix_min(cfg) -> int:
    """The ``min_shared`` the shared-prompt paths get: 0 (off) unless ``learner.shared_prefix``."""
    return MIN_SHARED_PREFIX if cfg.learner.shared_prefix else 0


def completion_batch(model, cfg, pad_id: int, ss: Sequence[Sample], with_entropy: bool = False,
                     entropy_grad: bool = False, device=None) -> CompletionBatch:
    """Logprobs (and entropies) of the samples' completions under ``model``."""
    lc = cfg.learner
    args = (model, [s.prompt_token_ids for s in ss], [s.completion_token_ids for s in ss], pad_id,
            cfg.rollout.temperature)
    if lc.shared_prompt and not lc.gradient_checkpointing:
        return completion_logprobs_shared(*args, with_entropy=with_entropy, entropy_grad=entropy_grad, device=device,
                                          min_shared=shared_prefix_min(cfg))
    return completion_logprobs_packed(*args, with_entropy=with_entropy, entropy_grad=entropy_grad, device=device)
