"""The rollout-engine contract: generate completions with token ids and behaviour logprobs.

Engines know nothing of Ray; the RolloutWorker actor owns one. Two implementations:
:mod:`softverify.engines.hf` (CPU default) and :mod:`softverify.engines.vllm_engine` (GPU).
:class:`RolloutEngine` is the whole contract: rollout, eval, verify and serving call
nothing else on an engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float = 0.0  # OpenAI semantics: subtracted once from every token already generated
    frequency_penalty: float = 0.0  # ... and this times how often it was generated
    top_logprobs: int = 0  # > 0: also report this many most likely tokens per step


@dataclass
class Generation:
    """One completion. ``logprobs[i]`` is log p(token_ids[i]) under the behaviour policy at
    the sampling temperature (before top-p/top-k truncation), the quantity the GRPO ratio needs."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)  # per step, when asked for


@dataclass
class PromptBatch:
    """Rendered prompts (chat template applied) and their token ids."""

    texts: list[str]
    token_ids: list[list[int]]


@runtime_checkable
class RolloutEngine(Protocol):
    """What every engine provides (HF on CPU, vLLM on GPUs)."""

    tokenizer: Any  #: a Hugging Face tokenizer (chat template, encode/decode, pad id)
    eos_ids: set[int]  #: token ids that end a turn

    def render(self, messages_list: Sequence[Sequence[dict]]) -> "PromptBatch":
        """Chat-template each conversation, assistant turn opened: texts and token ids."""

    def generate(self, prompt_token_ids: Sequence[Sequence[int]], sampling: "SamplingParams",
                 n: int = 1) -> list[list["Generation"]]:
        """``n`` completions per prompt, with behaviour logprobs."""

    def score(self, prompt_token_ids: Sequence[Sequence[int]], completion_token_ids: Sequence[Sequence[int]],
              temperature: float = 1.0) -> list[list[float]]:
        """Teacher-forced per-token logprobs of given completions under the current weights."""

    def next_token_logprobs(self, contexts: Sequence[Sequence[int]], token_ids: Sequence[int]) -> list[list[float]]:
        """``[len(contexts), len(token_ids)]``: log p(token | context) of each candidate next
        token at temperature 1 (the forced yes/no reading of an answer position)."""

    def load_weights(self, state: dict, partial: bool = False) -> None:
        """Replace the weights in place (``partial``: only the trained tensors)."""


def with_assistant_prefix(batch: PromptBatch, tokenizer, prefix: str) -> PromptBatch:
    """Start every assistant turn with ``prefix`` (e.g. ``"<think>\\n"``), R1-Zero style.

    The prefix becomes part of the prompt (never trained on); callers put it back in front
    of the generated text so verifiers see the whole assistant turn.
    """
    if not prefix:
        return batch
    extra = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    return PromptBatch([t + prefix for t in batch.texts], [list(ids) + extra for ids in batch.token_ids])


def render_turns(engine, messages_list, prefix: str) -> PromptBatch:
    """The one way a prompt becomes tokens, for rollout, eval, verify and serving alike: the
    engine's chat template, then the assistant turn opened with ``prefix``."""
    return with_assistant_prefix(engine.render(messages_list), engine.tokenizer, prefix)


def render_rows(engine, rows: Sequence[dict[str, Any]], system: str | None, prefix: str) -> PromptBatch:
    """Dataset rows as the policy sees them (:func:`softverify.task.prompts.row_messages`
    with the style's or the config's ``system`` prompt), rendered by :func:`render_turns`."""
    from softverify.task.prompts import row_messages

    return render_turns(engine, [row_messages(r, system) for r in rows], prefix)


def apply_penalties(logits, generated, presence: float, frequency: float):
    """OpenAI's presence/frequency penalties on next-token logits ``[B, V]``: each token
    already generated in row b (``generated[b]``, a list of ids; the prompt does not count)
    loses ``presence + frequency * count``. Returns new logits (input untouched)."""
    import torch

    if not presence and not frequency:
        return logits
    counts = torch.zeros_like(logits)
    for b, toks in enumerate(generated):
        if len(toks):
            ids = torch.as_tensor(list(toks), dtype=torch.long, device=logits.device)
            counts[b].index_add_(0, ids, torch.ones(len(ids), dtype=logits.dtype, device=logits.device))
    return logits - presence * (counts > 0).to(logits.dtype) - frequency * counts
