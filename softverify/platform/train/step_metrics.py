"""A training step's logged numbers, from its rollout rounds and its timings (pure: no Ray,
no trainer state), so the trainer's step is the machinery and this is what it reports."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class StepTimes:
    """``time.perf_counter()`` marks of one step: its start, the update's launch (the batch
    ready), the end of the work overlapped with the update, the update's end, the step's end
    (weights synced); and the sync's own seconds."""

    start: float
    learn_start: float
    overlap_end: float
    learn_end: float
    end: float
    sync_s: float


def step_metrics(rounds: Sequence[Any], times: StepTimes, *, kept: int, seen: int, zero_var: int,
                 trained_lengths: np.ndarray, lag: int, sync_bytes: int, sync_bytes_total: int,
                 questions_trained_total: int, data_position: int, force_answer: bool) -> dict[str, Any]:
    """Rewards, advantages, lengths, timings, throughput, dynamic sampling and pipeline lag of
    a step whose rounds (:class:`~softverify.platform.train.pipeline.Round`) are scored;
    ``kept`` / ``seen`` / ``zero_var`` count its groups (trained, sampled, with equal rewards)
    and ``trained_lengths`` are the completion lengths of the samples it trained on."""
    rewards = np.concatenate([r.rewards for r in rounds])
    lengths = np.concatenate([r.lengths for r in rounds])
    all_adv = np.concatenate([r.adv for r in rounds])
    total_tokens = int(lengths.sum())
    rollout_s = sum(r.rollout_s for r in rounds)
    verify_s = sum(r.verify_s for r in rounds)
    t = times
    m: dict[str, Any] = {
        "reward_mean": float(np.nanmean(rewards)) if np.isfinite(rewards).any() else float("nan"),
        "reward_std": float(np.nanstd(rewards)) if np.isfinite(rewards).any() else float("nan"),
        "adv_mean": float(all_adv.mean()), "adv_std": float(all_adv.std()), "adv_abs_max": float(np.abs(all_adv).max()),
        "response_len_mean": float(lengths.mean()), "response_len_max": int(lengths.max()),
        "stop_rate": float(np.mean([x for r in rounds for x in r.summ["stopped"]])),
        "time/rollout_s": rollout_s, "time/verify_s": verify_s, "time/learn_s": t.learn_end - t.learn_start,
        "time/sync_s": t.sync_s, "sync/bytes": sync_bytes, "sync/bytes_total": sync_bytes_total,
        "time/step_s": t.end - t.start, "time/wait_rollout_s": t.learn_start - t.start,
        "time/overlap_s": t.overlap_end - t.learn_start,
        "pipeline/policy_lag": lag,
        "throughput/rollout_tok_s": total_tokens / max(rollout_s, 1e-9),
        "throughput/verify_samples_s": len(rewards) / max(verify_s, 1e-9),
        "throughput/learn_tok_s": int(trained_lengths.sum()) / max(t.learn_end - t.learn_start, 1e-9),
        "throughput/questions_per_hour": 3600.0 * seen / max(t.end - t.start, 1e-9),
        "questions_sampled": seen, "questions_trained": kept, "questions_trained_total": questions_trained_total,
        "dynamic/zero_var_group_frac": zero_var / max(seen, 1),
        "dynamic/groups_kept": kept, "dynamic/groups_sampled": seen, "dynamic/refill_rounds": len(rounds) - 1,
        "data_position": data_position,
    }
    if force_answer:  # share of completions whose answer was forced, and still unparsed after it
        m["rollout/forced_frac"] = float(np.mean([x for r in rounds for x in r.summ["forced"]]))
        m["rollout/unanswered_frac"] = float(np.mean([a < 0 for r in rounds for a in r.summ["answers"]]))
    return m


def verifier_metrics(names: Sequence[str], scores: np.ndarray) -> dict[str, float | None]:
    """Per verifier column of the step's ``[samples, verifiers]`` scores: its mean and spread
    over the samples it scored, and the share it abstained on (NaN)."""
    m: dict[str, float | None] = {}
    for j, name in enumerate(names):
        col = scores[:, j]
        ok = ~np.isnan(col)
        m[f"reward/{name}"] = float(col[ok].mean()) if ok.any() else None
        m[f"reward_std/{name}"] = float(col[ok].std()) if ok.any() else None
        m[f"abstain/{name}"] = float(1 - ok.mean())
    return m
