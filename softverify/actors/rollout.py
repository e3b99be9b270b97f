"""RolloutWorker: a Ray actor that owns one rollout engine.

A thin shell: the engine (:mod:`softverify.engines`) does the work; the actor turns
dataset rows into prompts, engine generations into :class:`Sample` records, and applies
weight syncs. Several workers split a step's prompts.
"""
from __future__ import annotations

from typing import Any, Sequence

import ray

from softverify.config import ModelConfig, RolloutConfig
from softverify.engines.base import SamplingParams, render_turns
from softverify.prompts import row_messages
from softverify.types import Sample


def select_engine(rollout: RolloutConfig) -> str:
    """'auto' picks vLLM only where it can run: a GPU is assigned and vllm imports."""
    if rollout.engine != "auto":
        return rollout.engine
    if rollout.num_gpus_per_worker > 0:
        try:
            import vllm  # noqa: F401

            return "vllm"
        except ImportError:
            pass
    return "hf"


def make_engine(model_path: str, model: ModelConfig, rollout: RolloutConfig):
    kind = select_engine(rollout)
    if kind == "vllm":
        from softverify.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model_path, dtype=model.dtype, trust_remote_code=model.trust_remote_code)
    from softverify.engines.hf import HFEngine

    return HFEngine(
        model_path, dtype=model.dtype, torch_threads=rollout.torch_threads,
        trust_remote_code=model.trust_remote_code, batch_size=rollout.batch_size, decode=rollout.hf_decode,
    )


def sampling_from(rollout: RolloutConfig, seed: int | None) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=rollout.max_new_tokens, temperature=rollout.temperature, top_p=rollout.top_p,
        top_k=rollout.top_k, stop=list(rollout.stop), seed=seed,
    )


def _group_ids(rows: Sequence[Any], group_ids: Sequence[int] | None) -> list[int]:
    """Each row's group id in the step: the trainer's (its position in the step's prompts),
    else the row's index in this call."""
    return list(range(len(rows))) if group_ids is None else list(group_ids)


class RolloutCore:
    """Everything the actor does, without Ray (so it is unit-testable)."""

    def __init__(self, model_path: str, model: ModelConfig, rollout: RolloutConfig):
        self.rollout = rollout
        self.engine = make_engine(model_path, model, rollout)
        self.weights_version = 0

    def generate(
        self, rows: Sequence[dict[str, Any]], n: int, sampling: SamplingParams,
        weights: tuple[int, list] | None = None, group_ids: Sequence[int] | None = None,
    ) -> list[Sample]:
        """``n`` completions per row; ``group_ids[i]`` (default ``i``) is row ``i``'s group id in
        the whole step, which the trainer assigns (its position in the step's prompts).

        ``weights = (version, [state_dict_ref])``: the policy this call must sample from.
        A worker that Ray restarted after a crash comes back with the initial weights; it
        notices the version mismatch here and loads the current ones before sampling, so a
        retried task never samples from a stale policy. (The ref is wrapped in a list so
        Ray does not fetch the state dict on every call, only when it is needed.)"""
        self._ensure_weights(weights)
        prefix = self.rollout.assistant_prefix
        sys_prompt = self.rollout.system_prompt
        pb = render_turns(self.engine, [row_messages(r, sys_prompt) for r in rows], prefix)
        gens = self.engine.generate(pb.token_ids, sampling, n=n)
        gids = _group_ids(rows, group_ids)
        out = []
        for i, (row, gs) in enumerate(zip(rows, gens)):
            for g in gs:
                out.append(
                    Sample(
                        prompt_id=str(row.get("prompt_id", gids[i])), prompt=pb.texts[i], completion=prefix + g.text,
                        metadata=dict(row), group=gids[i], prompt_token_ids=pb.token_ids[i],
                        completion_token_ids=g.token_ids, behaviour_logprobs=g.logprobs, finish_reason=g.finish_reason,
                    )
                )
        return out

    def candidates(self, rows: Sequence[dict[str, Any]], answers: Sequence[str],
                   group_ids: Sequence[int] | None = None) -> list[Sample]:
        """Every answer of a closed set as a completion of every row (``algorithm.estimator =
        'enumerate'``): rendered exactly like :meth:`generate`'s prompts, each completion
        ``answer + rollout.stop[0]`` (the tokens a sampled answer ends with), candidates of a
        row contiguous. Nothing is generated; ``behaviour_logprobs`` are zeros because the
        enumerated loss takes its answer distribution from the learner's own forward."""
        prefix, close = self.rollout.assistant_prefix, (self.rollout.stop[0] if self.rollout.stop else "")
        tok = self.engine.tokenizer
        pb = render_turns(self.engine, [row_messages(r, self.rollout.system_prompt) for r in rows], prefix)
        comp = [tok(a + close, add_special_tokens=False)["input_ids"] for a in answers]
        gids = _group_ids(rows, group_ids)
        return [
            Sample(prompt_id=str(row.get("prompt_id", gids[i])), prompt=pb.texts[i], completion=prefix + a + close,
                   metadata=dict(row), group=gids[i], prompt_token_ids=pb.token_ids[i], completion_token_ids=list(c),
                   behaviour_logprobs=[0.0] * len(c), finish_reason="stop")
            for i, row in enumerate(rows) for a, c in zip(answers, comp)
        ]

    def evaluate(self, rows: Sequence[dict[str, Any]], sampling: SamplingParams,
                 weights: tuple[int, list] | None = None) -> list[dict[str, Any]]:
        """Greedy answers to labelled rows under the given policy; records as in
        ``platform.evaluation.run.run_eval`` (with the forced yes/no reading)."""
        from softverify.platform.evaluation.run import run_eval

        self._ensure_weights(weights)
        res = run_eval(self.engine, rows, max_new_tokens=sampling.max_new_tokens, stop=sampling.stop,
                       assistant_prefix=self.rollout.assistant_prefix, batch_size=self.rollout.batch_size,
                       seed=sampling.seed or 0, force_answer=True, progress=False,
                       system_prompt=self.rollout.system_prompt)
        return res.records

    def _ensure_weights(self, weights: tuple | None) -> None:
        """``weights = (version, [ref])`` or ``(version, [ref], partial)``. A partial state
        (only the trained tensors) is enough for a restarted worker too: the frozen rest
        never changed from the initial weights it came back with."""
        if weights is not None and weights[0] != self.weights_version:
            import ray as _ray

            self.load_weights(_ray.get(weights[1][0]), weights[0], bool(weights[2]) if len(weights) > 2 else False)

    def load_weights(self, state, version: int, partial: bool = False) -> int:
        self.engine.load_weights(state, partial=partial)
        self.weights_version = version
        return version

    def score(self, samples: Sequence[Sample]) -> list[list[float]]:
        return self.engine.score(
            [s.prompt_token_ids for s in samples], [s.completion_token_ids for s in samples], self.rollout.temperature
        )

    def score_policy_verifier(self, spec, samples: Sequence[Sample]):
        """Column of a ``needs_policy`` verifier (e.g. ``go_likelihood``) under the current
        weights: teacher-forced logprobs at temperature 1 (the policy's own distribution)."""
        from softverify.verifiers.suite import EnginePolicy, VerifierSuite

        cache = self.__dict__.setdefault("_policy_verifiers", {})
        if spec.display_name not in cache:
            cache[spec.display_name] = VerifierSuite([spec], policy=EnginePolicy(self.engine))
        return cache[spec.display_name].score(samples)[:, 0]


@ray.remote
class RolloutWorker(RolloutCore):
    """Ray actor hosting :class:`RolloutCore` (max_restarts set by the trainer)."""

    def ping(self) -> bool:
        return True

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()
