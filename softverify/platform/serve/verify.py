"""``/v1/verify``: score question/answer pairs with the same verifiers training uses.

Lets a user check what reward a (served or hand-written) answer would earn, with the
exact verifier code of the training run, without a training job; and lets training runs
score through a verifier served once (``kind: remote``, batches of items). Pure: no Ray,
no model.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from softverify.config import VerifierCore
from softverify.platform.serve.schema import ApiError, VerifyBatchRequest, VerifyItem, VerifyRequest
from softverify.types import Sample
from softverify.verifiers.suite import VerifierSuite
from softverify.task.answer import parse_answer


def train_specs(specs: Sequence[VerifierCore]):
    """Serving's verifier specs as training's (:class:`softverify.config.VerifierSpec`: the
    same fields, no actor placement: a replica hosts them itself)."""
    from softverify.config import VerifierSpec

    return [VerifierSpec(**s.model_dump()) for s in specs]


def check_verifiers(specs: Sequence[VerifierCore]) -> None:
    """Build every verifier once in the calling process, as training's preflight does
    (:func:`softverify.verifiers.suite.check_specs`): each mistake is one ``ConfigError``
    naming the verifier, before Ray starts; so is a verifier /v1/verify cannot host."""
    from softverify.configbase import ConfigError
    from softverify.verifiers.base import verifier_class
    from softverify.verifiers.suite import check_specs

    ts = train_specs(specs)
    check_specs(ts)
    policy = [s.display_name for s in ts if verifier_class(s.kind).needs_policy]
    if policy:
        raise ConfigError(f"verifier(s) {policy} need the policy's logprobs; /v1/verify cannot host them")


class VerifierSet:
    """The configured verifiers (a :class:`VerifierSuite`, as training builds them: with
    thresholds), built once per replica, keyed by their names."""

    def __init__(self, specs: Sequence[VerifierCore]):
        self.suite = VerifierSuite(train_specs(specs))
        if self.suite.policy_names:  # /v1/verify scores answers without the policy's logprobs
            raise ValueError(f"verifier(s) {self.suite.policy_names} need the policy's logprobs; "
                             "/v1/verify cannot host them")
        self.verifiers = self.suite.verifiers

    def names(self, wanted: list[str] | None) -> list[str]:
        """The verifiers a request asks for (all by default); 404 when none are configured,
        422 naming unknown ones."""
        if not self.verifiers:
            raise ApiError(404, "no verifiers are configured on this server", code="verify_disabled")
        names = wanted or list(self.verifiers)
        unknown = [n for n in names if n not in self.verifiers]
        if unknown:
            raise ApiError(422, f"unknown verifier(s) {unknown}; this server has {sorted(self.verifiers)}",
                           param="verifiers")
        return names

    def answer(self, req: VerifyRequest | VerifyBatchRequest) -> dict[str, Any]:
        """``/v1/verify``'s answer: one verification, or a list of them for a batch."""
        return self.score_batch(req) if isinstance(req, VerifyBatchRequest) else self.score(req)

    def score(self, req: VerifyRequest) -> dict[str, Any]:
        names = self.names(req.verifiers)
        return self._verifications([req], names)[0]

    def score_batch(self, req: VerifyBatchRequest) -> dict[str, Any]:
        """All items through each verifier in one call (a world model's one forward pass)."""
        names = self.names(req.verifiers)
        return {"object": "list", "verifiers": names, "data": self._verifications(req.items, names)}

    def _verifications(self, items: Sequence[VerifyItem], names: list[str]) -> list[dict[str, Any]]:
        if not items:
            return []
        samples = [Sample(prompt_id="verify", prompt=it.question, completion=it.answer,
                          # the item's own messages win: they are what a training sample carried
                          metadata={"messages": [{"role": "user", "content": it.question}], **it.metadata},
                          finish_reason=it.finish_reason, unforced_completion=it.unforced_answer) for it in items]
        try:
            matrix = self.suite.score(samples, names)
        except (ValueError, TypeError, KeyError) as e:  # metadata a verifier cannot use
            raise ApiError(422, f"a verifier cannot score this request: {e}", param="metadata") from None
        rewards = self.suite.rewards(matrix, names)
        return [{"object": "verification",
                 "scores": {n: None if math.isnan(v) else float(v) for n, v in zip(names, row)},  # None: abstains
                 "reward": None if math.isnan(r) else float(r), "parsed_answer": parse_answer(it.answer)}
                for it, row, r in zip(items, matrix, rewards)]
