"""``/v1/verify``: score a question/answer pair with the same verifiers training uses.

Lets a user check what reward a (served or hand-written) answer would earn, with the
exact verifier code of the training run, without a training job. Pure: no Ray, no model.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from softverify.platform.serve.api import ApiError, VerifierSpec, VerifyRequest
from softverify.types import Sample
from softverify.verifiers.suite import VerifierSuite
from softverify.verifiers.answer import parse_answer


class VerifierSet:
    """The configured verifiers (a :class:`VerifierSuite`, as training builds them: with
    thresholds), built once per replica, keyed by their names."""

    def __init__(self, specs: Sequence[VerifierSpec]):
        from softverify.config import VerifierSpec as TrainSpec

        self.suite = VerifierSuite([TrainSpec(kind=s.kind, name=s.name, weight=s.weight, threshold=s.threshold,
                                              params=s.params) for s in specs])
        if self.suite.policy_names:  # /v1/verify scores answers without the policy's logprobs
            raise ValueError(f"verifier(s) {self.suite.policy_names} need the policy's logprobs; "
                             "/v1/verify cannot host them")
        self.verifiers = self.suite.verifiers

    def score(self, req: VerifyRequest) -> dict[str, Any]:
        if not self.verifiers:
            raise ApiError(404, "no verifiers are configured on this server", code="verify_disabled")
        names = req.verifiers or list(self.verifiers)
        unknown = [n for n in names if n not in self.verifiers]
        if unknown:
            raise ApiError(422, f"unknown verifier(s) {unknown}; this server has {sorted(self.verifiers)}",
                           param="verifiers")
        messages = [{"role": "user", "content": req.question}]
        sample = Sample(prompt_id="verify", prompt=req.question, completion=req.answer,
                        metadata={**req.metadata, "messages": messages}, finish_reason="stop")
        try:
            matrix = self.suite.score([sample], names)
        except (ValueError, TypeError, KeyError) as e:  # metadata a verifier cannot use
            raise ApiError(422, f"a verifier cannot score this request: {e}", param="metadata") from None
        scores = {n: None if math.isnan(v) else float(v) for n, v in zip(names, matrix[0])}  # None: abstains
        reward = float(self.suite.rewards(matrix, names)[0])
        return {"object": "verification", "scores": scores, "reward": None if math.isnan(reward) else reward,
                "parsed_answer": parse_answer(req.answer)}
