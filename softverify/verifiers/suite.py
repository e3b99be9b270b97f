"""VerifierSuite: a run's verifiers built once, Ray-free, scoring samples to the matrix and
the per-sample reward exactly as training composes it.

The one way softverify hosts verifiers: each of the pool's host actors holds a suite of the
verifiers it hosts (all that reserve nothing share one host; one that reserves resources
has its own), a rollout worker holds one per policy-scored verifier, and the verify CLI
and ``/v1/verify`` hold one for all of theirs. So serving and training cannot drift apart:
verifiers are built from their specs with thresholds (:func:`build_from_spec`), every
column is checked against the score contract, verifiers that need the policy's logprobs
are routed to a :class:`PolicyScorer`, and the reward is the same threshold normalisation
and weighted mean over the verifiers that did not abstain (:func:`softverify.rewards.compose`).
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from softverify.config import VerifierSpec
from softverify.rewards import threshold_normalize, weighted_mean_available
from softverify.types import Sample
from softverify.verifiers.base import Verifier, build_from_spec, composition_thresholds


def check_scores(name: str, scores, n: int) -> np.ndarray:
    """The verifier contract: shape ``[n]``, values in [0, 1] or NaN."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"verifier {name!r} returned shape {s.shape}, expected ({n},)")
    bad = ~np.isnan(s) & ((s < 0) | (s > 1))
    if bad.any():
        raise ValueError(f"verifier {name!r} returned scores outside [0, 1]: {s[bad][:5]}")
    return s


class PolicyScorer(Protocol):
    """What a ``needs_policy`` verifier (e.g. ``go_likelihood``) needs from the policy."""

    def logprobs(self, prompt_ids: list[list[int]], continuation_ids: list[list[int]]) -> list[np.ndarray]:
        """Per-token logprobs of each continuation after its prompt, at temperature 1."""

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""


class EnginePolicy:
    """A rollout engine (HF or vLLM) as a :class:`PolicyScorer`: the policy under its
    current weights, teacher-forced at temperature 1 (its own distribution)."""

    def __init__(self, engine):
        self.engine = engine

    def logprobs(self, prompt_ids, continuation_ids):
        return self.engine.score(prompt_ids, continuation_ids, 1.0)

    def encode(self, text: str) -> list[int]:
        return self.engine.tokenizer(text, add_special_tokens=False)["input_ids"]


def unique_names(specs: Sequence[VerifierSpec]) -> list[str]:
    """The specs' display names; ``ValueError`` naming any that repeat."""
    names = [s.display_name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"verifier names must be unique; repeated: {dup} (set 'name' to tell them apart)")
    return names


def _build(spec: VerifierSpec, defer_threshold_policies: bool) -> Verifier:
    """The verifier of ``spec``; deferring, a world model whose threshold is a policy over the
    training prompts is built without it (:func:`softverify.verifiers.balance.held_back`)."""
    from softverify.verifiers.balance import held_back

    return build_from_spec(held_back(spec) if defer_threshold_policies else spec)


class VerifierSuite:
    """``defer_threshold_policies``: a world-model threshold policy (``balanced`` / ``median``)
    is built without its threshold, which the caller then resolves over its prompts with
    these verifiers (:func:`softverify.verifiers.balance.resolve_threshold_policies` with
    ``suite.verifiers``); without it such a spec is refused, as the verifier refuses it."""

    def __init__(self, specs: Sequence[VerifierSpec], policy: PolicyScorer | None = None,
                 defer_threshold_policies: bool = False):
        self.specs = list(specs)
        self.names = unique_names(self.specs)
        self.verifiers: dict[str, Verifier] = {s.display_name: _build(s, defer_threshold_policies)
                                               for s in self.specs}
        #: verifiers scored through ``policy`` (the policy's logprobs), not on the samples alone
        self.policy_names = [n for n, v in self.verifiers.items() if v.needs_policy]
        self.policy = policy
        self.weights = np.array([s.weight for s in self.specs], dtype=np.float64)
        self.thresholds = composition_thresholds(self.specs)

    def score(self, samples: Sequence[Sample], names: Sequence[str] | None = None) -> np.ndarray:
        """``[n_samples, n_names]`` (all verifiers by default), NaN where one abstains."""
        names = list(names or self.names)
        samples = list(samples)
        need = [n for n in names if n in self.policy_names]
        if need and self.policy is None:
            raise ValueError(f"verifier(s) {need} need the policy's logprobs: give the suite a policy "
                             "(e.g. `softverify verify --model`)")
        cols = [check_scores(n, self._column(n, samples), len(samples)) for n in names]
        return np.column_stack(cols) if cols else np.zeros((len(samples), 0))

    def _column(self, name: str, samples: list[Sample]):
        v = self.verifiers[name]
        if name in self.policy_names:
            return v.score_with(samples, self.policy.logprobs, self.policy.encode)
        return v.score(samples)

    def metrics(self) -> dict[str, float]:
        """Every verifier's counters (:meth:`Verifier.metrics`) as ``<name>/<key>``."""
        return {f"{n}/{k}": v for n, ver in self.verifiers.items() for k, v in ver.metrics().items()}

    def rewards(self, scores: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
        """Per-sample reward of ``scores`` (columns = ``names``): each column threshold-
        normalised as in training, then the weighted mean over those that scored."""
        idx = [self.names.index(n) for n in (names or self.names)]
        normed = np.column_stack([threshold_normalize(scores[:, k], self.thresholds[j]) for k, j in enumerate(idx)])
        return weighted_mean_available(normed, self.weights[idx])


def check_specs(specs: Sequence[VerifierSpec], defer_threshold_policies: bool = False) -> dict[str, Verifier]:
    """Build every verifier once in the calling process, before any cluster starts, so a
    missing ``model_dir``, a misspelled parameter or an unreadable file is one line naming the
    verifier instead of an actor's death after Ray is up. Verifiers that reserve a GPU are
    left to their actor (this process may have none). Returns the verifiers built (display
    name -> verifier), for the driver-side work that reads them instead of building or
    loading them again: threshold policies (``defer_threshold_policies``, as in
    :class:`VerifierSuite`), the base-rate check, the stratified prompt order, eval."""
    from softverify.configbase import ConfigError

    try:
        unique_names(specs)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    built: dict[str, Verifier] = {}
    for i, spec in enumerate(specs):
        if spec.placement.num_gpus > 0:
            continue
        try:
            built[spec.display_name] = _build(spec, defer_threshold_policies)
        except (ValueError, FileNotFoundError, OSError, KeyError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"verifiers.{i} ({spec.display_name!r}, kind {spec.kind!r}): {msg}") from None
    return built
