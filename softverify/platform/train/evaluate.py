"""The run's evals: every ``trainer.eval_every`` steps (and after the last) the rollout
workers answer the held-out questions greedily under the current policy; ``eval/*`` is the
free reading (no tag = wrong), ``eval_forced/*`` the forced yes/no reading (see
``evaluation/run.py``) when the engine supports it. With a world-model verifier each record
also carries the teacher's p, for the correlation of the policy's forced score with what
the verifier believes."""
from __future__ import annotations

from typing import Any

import numpy as np
import ray

from softverify.actors.group import ActorGroup, round_robin
from softverify.config import TrainConfig
from softverify.types import PolicyWeights


class Evaluator:
    """The held-out ``rows`` answered by ``workers``; the teacher is the world model the run's
    pre-flight built (``world_models``, by verifier name), loaded here only for one it left to
    its actor, on the first eval that needs it, and kept for the next."""

    def __init__(self, cfg: TrainConfig, workers: ActorGroup, rows, world_models: dict[str, Any] | None = None):
        self.cfg, self.workers, self.rows = cfg, workers, rows
        self.world_models = world_models or {}
        self._teacher = None

    def run(self, weights: PolicyWeights | None) -> dict[str, float]:
        """``eval/*`` and ``eval_forced/*`` of the policy ``weights`` (which the caller has
        synced to the workers)."""
        from softverify.engines.base import SamplingParams
        from softverify.evaluation.run import metrics_from_records

        cfg = self.cfg
        rows = [self.rows[i] for i in range(len(self.rows))]
        sp = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=0.0,
                            stop=list(cfg.rollout.stop), seed=0)
        score_only = cfg.trainer.eval_mode == "score" or (
            cfg.trainer.eval_mode == "auto" and "<answer>" in (cfg.rollout.assistant_prefix or ""))
        parts = round_robin(rows, len(self.workers))
        refs = self.workers[:len(parts)].call_split("evaluate", parts, sampling=sp, weights=weights,
                                                    score_only=score_only)
        records = [r for part in ray.get(refs) for r in part]
        wm_p = self.world_model_p([r for part in parts for r in part])
        if wm_p is not None:
            for rec, p in zip(records, wm_p):
                rec["wm_p"] = float(p)
        free, forced = metrics_from_records(records)
        out = {f"eval/{m}": v for m, v in free.items()}
        if forced is not None:
            out.update({f"eval_forced/{m}": v for m, v in forced.items()})
        return out

    def world_model_p(self, rows: list[dict[str, Any]]) -> np.ndarray | None:
        """The first world-model verifier's p for the eval rows (for the Spearman
        correlation of the policy's forced score with what the verifier believes)."""
        spec = next((v for v in self.cfg.verifiers if v.kind == "world_model"), None)
        if spec is None or not rows or "pert" not in rows[0]:
            return None
        if self._teacher is None:
            from softverify.verifiers.balance import world_model_of

            self._teacher = world_model_of(spec, self.world_models)
        p = self._teacher.predict_proba([r["pert"] for r in rows], [r["gene"] for r in rows])
        neg = np.array([bool(r.get("negated", False)) for r in rows])
        return np.where(neg, 1 - p, p)
