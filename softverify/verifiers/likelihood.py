"""Policy-likelihood knowledge reward: how likely the *current policy* finds a templated GO
sentence about the gene after its own reasoning.

For a sample with reasoning R about gene X (the completion up to ``</think>``, after the
part the prompt already ends with, e.g. the assistant prefix), the verifier builds S = "X is
involved in <GO term>, <GO term> and <GO term>." and scores the geometric-mean token
probability exp(mean log p(S | prompt, R)) under the current weights. Reasoning that
recalls X's biology makes the true facts more predictable, so within a GRPO group the
reward prefers completions that "know" the gene; the sentence is the same for the whole
group, so a constant prior on the sentence cancels out of the advantage.

It needs the policy, so it cannot run in the verifier pool (``needs_policy``): the trainer
routes it to rollout worker 0, which calls :meth:`score_with` with the engine's
teacher-forced scoring function and tokenizer.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Sequence

import numpy as np

from softverify.types import Sample
from softverify.verifiers.base import Verifier, register
from softverify.verifiers.knowledge import _GOVerifier
from softverify.verifiers.textparts import strip_prompt_overlap

LogprobFn = Callable[[list[list[int]], list[list[int]]], list[list[float]]]
EncodeFn = Callable[[str], list[int]]


_END = re.compile(r"</think>|<answer>", re.IGNORECASE)


def _reasoning_end(completion: str) -> int:
    """Where the reasoning stops: the first ``</think>`` or ``<answer>`` (else the end)."""
    m = _END.search(completion)
    return m.start() if m else len(completion)


def join_terms(terms: list[str]) -> str:
    return terms[0] if len(terms) == 1 else ", ".join(terms[:-1]) + " and " + terms[-1]


@register("go_likelihood")
class GOLikelihoodVerifier(_GOVerifier):
    """Geometric-mean probability of "X is involved in <GO terms>." after the reasoning.

    Params: ``n_terms`` GO terms per sentence (biological process first), ``template``
    with ``{symbol}`` and ``{terms}``, ``keys`` (default: the perturbed gene only), plus
    the KB params of every knowledge verifier. Abstains for genes without GO terms."""

    needs_policy = True

    def __init__(self, name=None, n_terms: int = 3, template: str = "\nIn summary, {symbol} is involved in {terms}.",
                 keys: Sequence[str] = ("pert",), **kw):
        super().__init__(name, keys=keys, **kw)
        if n_terms <= 0:
            raise ValueError(f"go_likelihood n_terms must be > 0, got {n_terms}")
        if "{symbol}" not in template or "{terms}" not in template:
            raise ValueError("go_likelihood template needs {symbol} and {terms}")
        self.n_terms, self.template = n_terms, template

    def sentence(self, symbol: str) -> str | None:
        terms = self.go.terms(symbol)[: self.n_terms]
        return self.template.format(symbol=symbol, terms=join_terms(terms)) if terms else None

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        raise RuntimeError(f"verifier {self.name!r} needs the current policy: call score_with(samples, logprob_fn, "
                           "encode) (the trainer routes it to a rollout worker)")

    def score_with(self, samples: Sequence[Sample], logprob_fn: LogprobFn, encode: EncodeFn) -> np.ndarray:
        """``logprob_fn(prompt_ids_list, continuation_ids_list)`` returns per-token
        logprobs of each continuation; ``encode(text)`` tokenises without special tokens."""
        ctx, cont, owner = [], [], []
        for i, s in enumerate(samples):
            if not s.prompt_token_ids:
                raise ValueError(f"sample {s.prompt_id!r} has no prompt_token_ids; go_likelihood scores "
                                 "rollout samples (or prompts tokenised by `softverify verify --model`)")
            head_text = strip_prompt_overlap(s.prompt, s.completion[: _reasoning_end(s.completion)]).rstrip()
            head = encode(head_text) if head_text else []
            for g in self.genes_of(s):
                sent = self.sentence(g)
                if sent is None:
                    continue
                ctx.append(list(s.prompt_token_ids) + head)
                cont.append(encode(sent))
                owner.append(i)
        out = np.full(len(samples), np.nan)
        if not ctx:
            return out
        lps = logprob_fn(ctx, cont)
        sums = np.zeros(len(samples))
        counts = np.zeros(len(samples))
        for i, lp in zip(owner, lps):
            sums[i] += math.exp(float(np.mean(lp))) if len(lp) else 0.0
            counts[i] += 1
        ok = counts > 0
        out[ok] = sums[ok] / counts[ok]
        return out
