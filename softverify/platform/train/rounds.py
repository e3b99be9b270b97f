"""A step's rollout rounds: the training mode's worker call on the step's prompts, the
verifier pool's scores, and the rewards, advantages and learner values the driver composes
from them (a few hundred floats).

What a round and an in-flight batch are, and how a checkpoint stores them, is
:mod:`softverify.platform.train.pipeline`; this module makes them. Every round records the
trainer step whose weights sampled it (``version``), so the caller hands in the policy of
the moment: a refill round drawn while the learner trains samples from the workers' weights
of then, and says so.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import ray

from softverify.actors.group import ActorGroup, round_robin
from softverify.algo.base import Mode
from softverify.config import TrainConfig
from softverify.learner.advantages import informative_groups
from softverify.platform.train.pipeline import PendingBatch, Round, load_pending
from softverify.rewards import compose
from softverify.types import PolicyWeights, Sample


@ray.remote(num_cpus=0)
def _merge(*parts: list[Sample]) -> list[Sample]:
    return [s for p in parts for s in p]


@ray.remote(num_cpus=0)
def select_samples(picks: list[list[int]], *parts: list[Sample]) -> list[Sample]:
    """The samples at ``picks[k]`` of each part, concatenated (dynamic sampling)."""
    return [p[i] for p, idx in zip(parts, picks) for i in idx]


@ray.remote(num_cpus=0)
def _summary(samples: list[Sample], n_texts: int = 2) -> dict[str, Any]:
    from softverify.task.answer import answer_to_int, parse_answer

    def label(s: Sample) -> int:
        """1/0, or -1 where the row has no usable label (diagnostics skip it)."""
        try:
            v = int(s.metadata.get("label"))
        except (TypeError, ValueError):
            return -1
        return v if v in (0, 1) else -1

    return {
        "lengths": [len(s.completion_token_ids) for s in samples],
        "sampled": [s.n_sampled for s in samples],  # forced tokens (rollout.force_answer) not counted
        "forced": [s.n_forced > 0 for s in samples],
        "answers": [-1 if (a := answer_to_int(parse_answer(s.completion))) is None else a for s in samples],
        "labels": [label(s) for s in samples],
        "stopped": [s.finish_reason == "stop" for s in samples],
        "texts": [(s.prompt_id, s.metadata.get("question", ""), s.completion, label(s)) for s in samples[:n_texts]],
    }


class RoundRunner:
    """Rolls out, scores and composes the rounds of a run's batches: ``rows`` are the training
    prompts, ``order`` draws the next ones (its position is the run's data position)."""

    def __init__(self, cfg: TrainConfig, mode: Mode, workers: ActorGroup, pool, rows, order):
        self.cfg, self.mode, self.workers, self.pool, self.rows, self.order = cfg, mode, workers, pool, rows, order

    def rollout(self, row_ids: Sequence[int], seed: int, weights: PolicyWeights | None):
        """The samples of the rows ``row_ids`` (an ObjectRef) and their group ids: the training
        mode's ``samples_per_prompt`` per prompt, from its rollout worker call (``Mode.launch``)
        under ``weights``."""
        from softverify.actors.rollout import sampling_from

        rows = [self.rows[i] for i in row_ids]
        refs = []
        order = []
        for w, idx in enumerate(round_robin(range(len(rows)), len(self.workers))):
            part = [rows[i] for i in idx]
            sp = sampling_from(self.cfg.rollout, seed=seed * 1000 + w)
            refs.append(self.mode.launch(self.workers[w], part, sp, weights, idx))
            order.extend(idx)
        merged = _merge.remote(*refs)
        # a group's id is its row's position in the step, set here once: the workers stamp it on
        # every Sample (Sample.group) and the merged order is each chunk's rows, G samples each
        group_ids = np.repeat(np.array(order), self.cfg.samples_per_prompt)
        return merged, group_ids

    def sample(self, k: int, seed: int, weights: PolicyWeights | None, version: int) -> Round:
        """Roll out ``k`` fresh prompts, score them, compose rewards and advantages."""
        return self.finish(self.launch(k, seed, weights, version))

    def launch(self, k: int, seed: int, weights: PolicyWeights | None, version: int) -> Round:
        """Start rolling out ``k`` fresh prompts under ``weights`` (those of trainer step
        ``version``) and return at once: the samples' ref, their group ids, and ``version``."""
        t0 = time.perf_counter()
        merged, group_ids = self.rollout(self.order.take(k), seed, weights)
        return Round(merged, group_ids, version, t0=t0)

    def finish(self, r: Round) -> Round:
        """Wait for a launched round, score it, compose rewards and advantages (in place)."""
        summ = ray.get(_summary.remote(r.ref, self.mode.logged_per_step()))
        t1 = time.perf_counter()
        scores = self.pool.score(r.ref, policy_worker=self.workers[0])  # worker 0 scores needs_policy verifiers
        t2 = time.perf_counter()
        r.rollout_s, r.verify_s, r.t0 = t1 - r.t0, t2 - t1, None
        return self.compose(r, summ, scores)

    def compose(self, r: Round, summ: dict[str, Any], scores: np.ndarray) -> Round:
        """Rewards, advantages and what the learner trains on, from a round's scores (in place)."""
        cfg = self.cfg
        weights = [v.weight for v in cfg.verifiers]
        rewards, adv = compose(scores, weights, self.pool.thresholds, r.group_ids, cfg.reward.aggregation,
                               cfg.algorithm.advantage)
        learn_values = self.mode.learner_values(rewards, adv)
        r.summ, r.scores, r.rewards, r.adv, r.learn_values = summ, scores, rewards, adv, learn_values
        r.informative = informative_groups(rewards, r.group_ids)
        r.lengths, r.sampled = np.array(summ["lengths"]), np.array(summ["sampled"])
        return r

    def launch_batch(self, step: int, weights: PolicyWeights | None, version: int) -> PendingBatch:
        """The batch step ``step`` trains on, its first rollout round started."""
        seed = self.cfg.trainer.seed * 100003 + step - 1
        return PendingBatch(step, seed, [self.launch(self.cfg.rollout.prompts_per_step, seed, weights, version)])

    def complete(self, batch: PendingBatch, weights: PolicyWeights | None, version: int) -> None:
        """Score a launched batch and, with ``dynamic_sampling='refill'``, draw its refill
        rounds (sampled with ``weights``, the workers' of now, recorded in each round)."""
        if batch.done:
            return
        ac, k = self.cfg.algorithm, self.cfg.rollout.prompts_per_step
        self.finish(batch.rounds[0])
        while ac.dynamic_sampling == "refill" and len(batch.rounds) <= ac.max_refill_rounds:
            _, kept, _, _ = self.select_groups(batch.rounds)
            if kept >= k:
                break
            batch.rounds.append(self.sample(k, batch.seed + 7919 * len(batch.rounds), weights, version))
        batch.done = True

    def restore(self, directory: Path, index: dict | None) -> list[PendingBatch]:
        """The in-flight batches a pipelined checkpoint holds under ``directory`` (its
        ``pipeline`` index), rebuilt as they were: samples back into the object store, rewards
        recomposed from the saved scores."""
        if not index or not index["batches"]:
            return []
        out = []
        for batch, rounds in load_pending(directory, index):
            for info, samples, scores in rounds:
                ref = ray.put(samples)
                r = Round(ref, info["group_ids"], info["version"], rollout_s=info["rollout_s"],
                          verify_s=info["verify_s"])
                batch.rounds.append(self.compose(r, ray.get(_summary.remote(ref, self.mode.logged_per_step())),
                                                 scores))
            batch.done = True
            out.append(batch)
        return out

    def select_groups(self, rounds: list[Round]) -> tuple[list[list[int]], int, int, int]:
        """Per round, the sample indices the learner trains on (dynamic sampling), at most
        ``prompts_per_step`` groups in all; returns (picks, groups kept, groups seen,
        groups whose rewards all agree)."""
        mode, cap = self.cfg.algorithm.dynamic_sampling, self.cfg.rollout.prompts_per_step
        picks, kept, seen, zero_var = [], 0, 0, 0
        for r in rounds:
            g = r.group_ids
            idx = []
            for gid in dict.fromkeys(g.tolist()):  # groups in order
                seen += 1
                members = np.nonzero(g == gid)[0]
                informative = bool(r.informative[members[0]])
                zero_var += not informative
                if (informative or mode == "none") and kept < cap:
                    idx.extend(members.tolist())
                    kept += 1
            picks.append(idx)
        return picks, kept, seen, zero_var
