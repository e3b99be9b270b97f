"""RolloutWorker: a Ray actor that owns one rollout engine.

A thin shell: the engine (:mod:`softverify.engines`) does the work; the actor turns
dataset rows into prompts, engine generations into :class:`Sample` records, and applies
weight syncs. Several workers split a step's prompts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import ray

from softverify.config import ModelConfig, RolloutConfig
from softverify.engines.base import Generation, SamplingParams, render_rows
from softverify.types import PolicyWeights, Sample
from softverify.task.answer import answer_token_start, candidate_ids, forced_turn_tokens, parse_answer


def select_engine(rollout: RolloutConfig) -> str:
    """'auto' picks vLLM only where it can run: a GPU is assigned and vllm imports."""
    if rollout.engine != "auto":
        return rollout.engine
    if rollout.placement.num_gpus > 0:
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

        return VLLMEngine(model_path, dtype=rollout.dtype or model.dtype, trust_remote_code=model.trust_remote_code,
                          settings=rollout.vllm)
    from softverify.engines.hf import HFEngine

    return HFEngine(
        model_path, dtype=rollout.dtype or model.dtype, torch_threads=rollout.torch_threads,
        trust_remote_code=model.trust_remote_code, batch_size=rollout.batch_size, decode=rollout.hf_decode,
        prepack=rollout.hf_prepack,
    )


def sampling_from(rollout: RolloutConfig, seed: int | None) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=rollout.max_new_tokens, temperature=rollout.temperature, top_p=rollout.top_p,
        top_k=rollout.top_k, stop=list(rollout.stop), seed=seed,
    )


#: Added to the reasoning's seed for the forced answers' sampling: a stream of its own, still
#: reproducible from the step's seed (the trainer gives workers seeds 1 apart).
ANSWER_SEED_OFFSET = 1_000_003


@dataclass
class Turn:
    """One completion as a Sample records it: sampled, or sampled then forced to answer."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    forced_mask: list[int] = field(default_factory=list)  # empty: nothing forced
    unforced_text: str | None = None  # the sampled text before forcing

    @classmethod
    def sampled(cls, g: Generation) -> "Turn":
        return cls(g.text, list(g.token_ids), list(g.logprobs), g.finish_reason)


def answer_sampling(sampling: SamplingParams, max_new_tokens: int) -> SamplingParams:
    """The answer phase of answer forcing: the reasoning's sampler (temperature, top-p/k,
    penalties), a budget of a few tokens, ending at ``</answer>``."""
    seed = None if sampling.seed is None else sampling.seed + ANSWER_SEED_OFFSET
    return dataclasses.replace(sampling, max_new_tokens=max_new_tokens, stop=["</answer>"], seed=seed)


def force_answers(engine, prompt_ids: Sequence[Sequence[int]], prefix: str, gens: Sequence[Sequence[Generation]],
                  sampling: SamplingParams, answer_tokens: int) -> list[list[Turn]]:
    """Answer forcing (``rollout.force_answer``, s1's budget forcing) over a rollout's
    generations: ``gens[i]`` are prompt ``i``'s completions (its assistant turn opened with
    ``prefix``).

    A completion with a parseable answer is kept as it is. Every other one is re-opened
    (trailing EOS dropped) and closed for it with the eval's forcing suffix (``</think>`` if
    needed, then ``<answer>``: :func:`softverify.task.answer.forced_turn_tokens`), and
    the answer is *sampled* from there, all forced contexts in one batched
    ``engine.generate``. Its turn is reasoning + suffix + answer; the suffix tokens get
    behaviour logprob 0 and forced_mask 1 (not sampled: the learner masks them out), the
    answer tokens their own behaviour logprobs, sampled given the suffix."""
    turns = [[Turn.sampled(g) for g in gs] for gs in gens]
    todo = [(i, j) for i, gs in enumerate(gens) for j, g in enumerate(gs) if parse_answer(prefix + g.text) is None]
    if not todo:
        return turns
    parts, contexts = [], []
    for i, j in todo:
        g = gens[i][j]
        kept, suffix = forced_turn_tokens(engine.tokenizer, engine.eos_ids, prefix + g.text, g.token_ids)
        parts.append((kept, suffix))
        contexts.append(list(prompt_ids[i]) + kept + suffix)
    answers = engine.generate(contexts, answer_sampling(sampling, answer_tokens), n=1)
    for (i, j), (kept, suffix), (a, *_) in zip(todo, parts, answers):
        g = gens[i][j]
        suffix_text = engine.tokenizer.decode(suffix)
        turns[i][j] = Turn(
            text=g.text + suffix_text + a.text, token_ids=kept + suffix + list(a.token_ids),
            logprobs=list(g.logprobs[: len(kept)]) + [0.0] * len(suffix) + list(a.logprobs),
            finish_reason=a.finish_reason, forced_mask=[0] * len(kept) + [1] * len(suffix) + [0] * len(a.token_ids),
            unforced_text=g.text)
    return turns


def enumerated_turns(tokenizer, eos_ids, prefix: str, g: Generation, cands: Sequence[Sequence[int]]) -> list[Turn]:
    """One sampled reasoning followed by every candidate answer (CoT with
    ``algorithm.estimator='enumerate'``), one :class:`Turn` per candidate.

    The reasoning is the generation up to (not including) its own last ``<answer>`` tag, or
    all of it (trailing EOS dropped) when it wrote none; the eval's forcing suffix
    (:func:`softverify.task.answer.forced_turn_tokens`) then opens the answer and the
    candidate's tokens follow. Suffix and candidate are marked forced (behaviour logprob 0,
    forced_mask 1): the policy did not sample them, the reasoning keeps its behaviour
    logprobs, and ``unforced_text`` is the generation as written (the format verifier's
    text: the model earns format credit only for tags it wrote)."""
    ids, lps = list(g.token_ids), list(g.logprobs)
    start = answer_token_start(tokenizer, ids)
    text = g.text
    if start is not None:
        ids, lps = ids[:start], lps[:start]
        text = tokenizer.decode(ids)
    kept, suffix = forced_turn_tokens(tokenizer, eos_ids, prefix + text, ids)
    head = text + tokenizer.decode(suffix)
    return [Turn(text=head + tokenizer.decode(list(c)), token_ids=kept + suffix + list(c),
                 logprobs=lps[: len(kept)] + [0.0] * (len(suffix) + len(c)), finish_reason="stop",
                 forced_mask=[0] * len(kept) + [1] * (len(suffix) + len(c)), unforced_text=g.text)
            for c in cands]


def _group_ids(rows: Sequence[Any], group_ids: Sequence[int] | None) -> list[int]:
    """Each row's group id in the step: the trainer's (its position in the step's prompts),
    else the row's index in this call."""
    return list(range(len(rows))) if group_ids is None else list(group_ids)


class RolloutCore:
    """Everything the actor does, without Ray (so it is unit-testable)."""

    def __init__(self, model_path: str, model: ModelConfig, rollout: RolloutConfig):
        from softverify.infra import quiet

        quiet.in_actor("transformers")  # a quiet run: no "Loading weights" bar breaking the driver's progress bar
        self.rollout = rollout
        self.engine = make_engine(model_path, model, rollout)
        self.weights_version = 0
        self.model_path = model_path
        self._adapters = None  # AdapterMerger, made on the first LoRA adapter payload

    def generate(
        self, rows: Sequence[dict[str, Any]], n: int, sampling: SamplingParams,
        weights: PolicyWeights | None = None, group_ids: Sequence[int] | None = None,
    ) -> list[Sample]:
        """``n`` completions per row; ``group_ids[i]`` (default ``i``) is row ``i``'s group id in
        the whole step, which the trainer assigns (its position in the step's prompts).

        ``weights``: the policy this call must sample from. A worker that Ray restarted after
        a crash comes back with the initial weights; it notices the version mismatch here and
        loads the current ones before sampling, so a retried task never samples from a stale
        policy.

        With ``rollout.force_answer`` unanswered completions are then forced to answer
        (:func:`force_answers`): one more batched generate call over just those."""
        self._ensure_weights(weights)
        prefix = self.rollout.assistant_prefix
        pb, gens = self._sample(rows, n, sampling)
        if self.rollout.force_answer:
            turns = force_answers(self.engine, pb.token_ids, prefix, gens, sampling, self.rollout.force_answer_tokens)
        else:
            turns = [[Turn.sampled(g) for g in gs] for gs in gens]
        return self._samples(rows, pb, turns, group_ids)

    def reasoned_candidates(
        self, rows: Sequence[dict[str, Any]], n: int, sampling: SamplingParams, answers: Sequence[str],
        weights: PolicyWeights | None = None, group_ids: Sequence[int] | None = None,
    ) -> list[Sample]:
        """CoT with ``algorithm.estimator='enumerate'``: ``n`` reasonings sampled per row, each
        followed by every answer in ``answers`` (:func:`enumerated_turns`); per row ``n * K``
        samples, a reasoning's K candidates contiguous. Weights as in :meth:`generate`."""
        self._ensure_weights(weights)
        pb, gens = self._sample(rows, n, sampling)
        tok = self.engine.tokenizer
        cands = candidate_ids(tok, answers, self.rollout.stop[0])
        turns = [[t for g in gs for t in enumerated_turns(tok, self.engine.eos_ids, self.rollout.assistant_prefix, g,
                                                          cands)] for gs in gens]
        return self._samples(rows, pb, turns, group_ids)

    def _sample(self, rows: Sequence[dict[str, Any]], n: int, sampling: SamplingParams):
        """The rows' prompts rendered with the assistant prefix, and ``n`` generations each."""
        pb = render_rows(self.engine, rows, self.rollout.system_prompt, self.rollout.assistant_prefix)
        return pb, self.engine.generate(pb.token_ids, sampling, n=n)

    def _samples(self, rows: Sequence[dict[str, Any]], pb, turns: list[list[Turn]],
                 group_ids: Sequence[int] | None) -> list[Sample]:
        """Row i's turns as Samples of group ``group_ids[i]``, in order."""
        prefix = self.rollout.assistant_prefix
        gids = _group_ids(rows, group_ids)
        out = []
        for i, (row, ts) in enumerate(zip(rows, turns)):
            for t in ts:
                out.append(
                    Sample(
                        prompt_id=str(row.get("prompt_id", gids[i])), prompt=pb.texts[i], completion=prefix + t.text,
                        metadata=dict(row), group=gids[i], prompt_token_ids=pb.token_ids[i],
                        completion_token_ids=t.token_ids, behaviour_logprobs=t.logprobs, finish_reason=t.finish_reason,
                        forced_mask=t.forced_mask,
                        unforced_completion=None if t.unforced_text is None else prefix + t.unforced_text,
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
        pb = render_rows(self.engine, rows, self.rollout.system_prompt, prefix)
        comp = candidate_ids(self.engine.tokenizer, answers, close)
        gids = _group_ids(rows, group_ids)
        return [
            Sample(prompt_id=str(row.get("prompt_id", gids[i])), prompt=pb.texts[i], completion=prefix + a + close,
                   metadata=dict(row), group=gids[i], prompt_token_ids=pb.token_ids[i], completion_token_ids=list(c),
                   behaviour_logprobs=[0.0] * len(c), finish_reason="stop")
            for i, row in enumerate(rows) for a, c in zip(answers, comp)
        ]

    def evaluate(self, rows: Sequence[dict[str, Any]], sampling: SamplingParams,
                 weights: PolicyWeights | None = None, score_only: bool = False) -> list[dict[str, Any]]:
        """Greedy answers to labelled rows under the given policy; records as in
        ``evaluation.run.run_eval`` (with the forced yes/no reading; ``score_only``:
        the forced score alone, one forward per question)."""
        from softverify.evaluation.run import run_eval

        self._ensure_weights(weights)
        res = run_eval(self.engine, rows, max_new_tokens=sampling.max_new_tokens, stop=sampling.stop,
                       assistant_prefix=self.rollout.assistant_prefix, batch_size=self.rollout.batch_size,
                       seed=sampling.seed or 0, force_answer=True, progress=False,
                       system_prompt=self.rollout.system_prompt, score_only=score_only)
        return res.records

    def _ensure_weights(self, weights: PolicyWeights | None) -> None:
        """Load ``weights`` unless this worker already holds their version."""
        if weights is not None and weights.version != self.weights_version:
            if weights.ref is None:  # learner.sync_method=collective: no object-store copy to catch up from
                raise RuntimeError(
                    f"this rollout worker holds policy version {self.weights_version}, the step needs "
                    f"{weights.version}, and with learner.sync_method=collective there is no object-store copy to "
                    "load (a restarted worker has left the broadcast group); re-run with --resume, or use "
                    "learner.sync_method=object_store to survive worker restarts")
            import ray as _ray

            self.load_weights(_ray.get(weights.ref), weights.version, weights.partial)

    def load_weights(self, state, version: int, partial: bool = False) -> int:
        """Load a weight sync: a state dict, or the object store's wire form of one
        (:class:`softverify.sync.wire.WireState`, read in place from shared memory)."""
        from softverify.learner.lora import is_adapter_payload
        from softverify.sync.wire import WireState, from_wire

        if isinstance(state, WireState):
            state = from_wire(state)
        if is_adapter_payload(state):  # learner.lora.sync='adapters': merge into the base weights here
            if self._adapters is None:
                from softverify.learner.lora import AdapterMerger

                self._adapters = AdapterMerger(self.model_path)
            state, partial = self._adapters.merge(state), True
        self.engine.load_weights(state, partial=partial)
        self.weights_version = version
        return version

    # ---------------------------------------------------------------- collective weight sync
    def join_broadcast(self, rank: int, world: int, addr: str, port: int, backend: str) -> bool:
        """Join learner rank 0's weight-broadcast group (``learner.sync_method=collective``). The
        vLLM engine's model lives in vLLM's own worker process, which joins in its place."""
        from softverify.sync.collective import WeightBroadcaster

        if hasattr(self.engine, "join_weight_group"):
            self.engine.join_weight_group(addr, port, rank, world, backend)
            self.broadcaster = self.engine
            return True
        device = self.engine.device if backend == "nccl" else "cpu"
        self.broadcaster = WeightBroadcaster(rank, world, addr, port, backend=backend, device=device)
        return True

    def in_broadcast_group(self) -> bool:
        """False for a worker Ray restarted after the group formed (it must not be waited on)."""
        return getattr(self, "broadcaster", None) is not None

    def receive_weights(self, version: int, partial: bool = False) -> int:
        """This worker's side of a collective weight sync: the state rank 0 broadcasts."""
        if self.broadcaster is self.engine:  # vLLM: received and loaded inside its worker
            self.engine.receive_weights()
            self.weights_version = version
            return version
        return self.load_weights(self.broadcaster.receive(), version, partial)

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
