"""Which sampler settings keep vLLM's behaviour logprobs equal to what the learner computes.

Torch-free so the config can check them when it is read (``softverify.config``), and the
engine again on every call (``rollout.engine='auto'`` picks vLLM only at run time).

Why: the GRPO ratio compares the learner's log p(token) -- the full softmax of the logits
at the sampling temperature -- with the behaviour logprob the engine reported. vLLM's
sampler (``vllm/v1/sample/sampler.py``: ``Sampler.forward``) computes ``processed_logprobs``
after temperature *and* after top-k/top-p have masked the logits, so under truncation a
sampled token's logprob is renormalised over the kept tokens and the ratio is biased by
log(kept mass) on every token. The HF engine reports the untruncated logprob, so it has no
such rule. Nothing in softverify recomputes behaviour logprobs with the learner, so the
truncated settings are refused rather than silently biased.
"""
from __future__ import annotations


def vllm_sampling_problem(temperature: float, top_p: float, top_k: int) -> str | None:
    """A one-line refusal when vLLM's behaviour logprobs would not be the learner's, else None.
    Greedy decoding (temperature 0) never feeds the ratio, so it passes."""
    if temperature == 0:
        return None
    bad = []
    if top_p < 1:
        bad.append(f"rollout.top_p={top_p}")
    if top_k > 0:
        bad.append(f"rollout.top_k={top_k}")
    if not bad:
        return None
    return (f"{' and '.join(bad)} with the vLLM engine: vLLM reports logprobs after top-p/top-k truncation "
            f"(renormalised over the kept tokens) while the learner's ratio uses the full softmax, so every "
            f"importance ratio would be biased; softverify does not recompute behaviour logprobs, so set "
            f"rollout.top_p=1.0 and rollout.top_k=0 (temperature alone), or use rollout.engine='hf'")
