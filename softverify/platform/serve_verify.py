"""``/v1/verify``: score a question/answer pair with the same verifiers training uses.

Lets a user check what reward a (served or hand-written) answer would earn, with the
exact verifier code of the training run, without a training job. Pure: no Ray, no model.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from softverify.platform.serve_api import ApiError, VerifierSpec, VerifyRequest
from softverify.types import Sample
from softverify.verifiers import build_verifier
from softverify.verifiers.answer import parse_answer


class VerifierSet:
    """The configured verifiers, built once per replica, keyed by their names."""

    def __init__(self, specs: Sequence[VerifierSpec]):
        self.verifiers = {}
        for spec in specs:
            v = build_verifier(spec.kind, name=spec.name, **spec.params)
            if v.needs_policy:
                raise ValueError(f"verifier {v.name!r} needs the policy's logprobs; /v1/verify cannot host it")
            if v.name in self.verifiers:
                raise ValueError(f"two verifiers are named {v.name!r}; give one a 'name'")
            self.verifiers[v.name] = v

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
        scores: dict[str, float | None] = {}
        for name in names:
            try:
                value = float(self.verifiers[name].score([sample])[0])
            except (ValueError, TypeError, KeyError) as e:  # metadata the verifier cannot use
                raise ApiError(422, f"verifier {name!r} cannot score this request: {e}", param="metadata") from None
            scores[name] = None if math.isnan(value) else value  # None: the verifier abstains
        return {"object": "verification", "scores": scores, "parsed_answer": parse_answer(req.answer)}
