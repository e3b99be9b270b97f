"""What every training mode provides (:mod:`softverify.algo`).

Kept free of torch and of :mod:`softverify.config` (annotations are strings): the config
builds a mode while it validates, before any model code is imported. The learner-side work
of a mode (:meth:`Mode.learn`) imports its torch code when a rank first calls it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class Mode:
    """One estimator in one prompt style, bound to the run's config.

    Capabilities the pipeline reads (attributes, not config fields):

    - ``enumerates``: every candidate answer of a closed set is scored, so the step's mean
      reward is fixed by construction and the policy's own expected reward
      (``policy_expected_reward``) is what training moves.
    - ``samples_during_training``: the rollout workers sample with the policy while it trains;
      when False their weights only need to be current for evals and policy-scored verifiers.
    """

    name = "mode"
    enumerates = False
    samples_during_training = True

    def __init__(self, cfg: "TrainConfig"):  # noqa: F821 -- a string annotation: no import of the config
        self.cfg = cfg

    # ------------------------------------------------------------------ config
    @property
    def samples_per_prompt(self) -> int:
        """Sequences the learner gets per prompt."""
        return self.cfg.rollout.group_size

    def check(self) -> None:
        """Refuse config combinations this mode cannot train (``ValueError`` naming the keys)."""

    # ------------------------------------------------------------------ driver side
    def launch(self, worker, rows: Sequence[dict[str, Any]], sampling, weights, group_ids: Sequence[int]):
        """Start the rollout worker's call for ``rows``: an ObjectRef of their samples, each
        prompt's ``samples_per_prompt`` samples contiguous and stamped with its group id."""
        raise NotImplementedError

    def learner_values(self, rewards: np.ndarray, adv: np.ndarray) -> np.ndarray:
        """What the learner gets per sample from :func:`softverify.rewards.compose`'s output."""
        raise NotImplementedError

    def shard_unit(self, n: int, world: int) -> int:
        """The samples that must stay on one learner rank together when ``n`` are split over
        ``world`` ranks."""
        raise NotImplementedError

    def logged_per_step(self) -> int:
        """Completions ``samples.jsonl`` keeps per step."""
        return 2

    # ------------------------------------------------------------------ learner side
    def learn(self, rank, batch) -> dict[str, float]:
        """One update on one learner rank (:class:`softverify.learner.rank.Learner`) from its
        :class:`~softverify.learner.rank.LearnBatch`; the rank's metrics."""
        raise NotImplementedError
