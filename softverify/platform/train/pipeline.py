"""Off-policy pipelining (``algorithm.max_staleness``): the batches rolled out ahead of the learner.

With ``max_staleness = N > 0`` the trainer keeps the rollouts of the next ``N`` steps in
flight: the batch that step ``s`` trains on is launched at the start of step ``s - N`` with
the weights of that moment, and while the learner trains step ``s - N`` the rollout workers
and verifiers produce it. Its *policy lag* is the number of learner steps between the
weights it was sampled from and the weights it trains: at most ``N`` (fewer in the first
steps of a run). ``N = 0`` is the exact on-policy loop.

Why this is still the GRPO objective: the sampled loss (:func:`softverify.learner.losses.policy_loss`)
takes its importance ratio against each Sample's ``behaviour_logprobs``, recorded by the
engine that sampled it, never against a forward of the current policy. A stale batch therefore
gets ``ratio = pi_current / pi_behaviour`` and the usual PPO clip bounds how far one update
trusts it. With ``algorithm.estimator = 'enumerate'`` no correction is needed: the
candidates are the whole closed answer set (not a sample of the behaviour policy) and the loss
takes its answer distribution from the learner's own forward, so a batch built earlier is
exactly the batch built now, and pipelining only overlaps candidate building and scoring with
learning. In the CoT style the enumerated estimator's reasonings are sampled: their clipped
ratio against the behaviour logprobs corrects the lag as above, while the answers after them
are again the closed set. Verifiers that score with the policy itself (``needs_policy``) are refused: their
rewards would come from the stale policy with nothing correcting them.

Checkpoints: the in-flight batches are always complete (rolled out and scored) when a step
ends, so a checkpoint stores them as they are -- token ids and behaviour logprobs in
safetensors, texts and metadata in JSON, the verifier scores in their own dtype -- and a resumed run
trains on exactly the samples the uninterrupted run would have. (Re-generating them on resume
would need the behaviour weights saved too, and engines that are not bit-deterministic, such
as vLLM, would still break exactness.) No pickle: everything reads back as plain data.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from softverify.config import ConfigError, TrainConfig
from softverify.infra.fsutil import write_text_atomic
from softverify.types import Sample

#: Sample fields stored as flat arrays (ragged: one length vector per field) and their dtypes.
#: float64 keeps a Python float exact.
_ARRAYS = {"prompt_token_ids": np.int64, "completion_token_ids": np.int64, "behaviour_logprobs": np.float64}
_TEXT = [f.name for f in dataclasses.fields(Sample) if f.name not in _ARRAYS]


@dataclass
class Round:
    """One rollout round of a step's batch: launched (``ref`` to its samples, their
    ``group_ids``, ``version``: the trainer step whose weights sampled it, ``t0``: when), then
    scored and composed (:mod:`softverify.platform.train.rounds`; everything after
    ``verify_s``; ``learn_values`` is what the training mode trains on per sample, see
    ``Mode.learner_values``)."""

    ref: Any
    group_ids: np.ndarray
    version: int
    t0: float | None = None  # launch time, until the round is finished
    rollout_s: float = 0.0
    verify_s: float = 0.0
    summ: dict[str, Any] = field(default_factory=dict)  # per-sample lists the driver reads (rounds._summary)
    scores: np.ndarray | None = None  # [n, verifiers]
    rewards: np.ndarray | None = None
    adv: np.ndarray | None = None
    learn_values: np.ndarray | None = None
    informative: np.ndarray | None = None  # per sample: its group's rewards differ
    lengths: np.ndarray | None = None  # completion tokens
    sampled: np.ndarray | None = None  # sampled (not forced) completion tokens


@dataclass
class PendingBatch:
    """The rounds (first rollout plus any refill rounds) of the batch step ``step`` trains on.

    ``rounds[k]`` is a :class:`Round`; its ``version`` is the trainer step (learner updates
    done) whose weights sampled it. ``done`` once every round is scored and, with
    dynamic refill, the refill rounds are drawn."""

    step: int
    seed: int
    rounds: list[Round] = field(default_factory=list)
    done: bool = False

    def lag(self, train_version: int) -> int:
        """Learner steps between the oldest weights that sampled this batch and ``train_version``."""
        return train_version - min(r.version for r in self.rounds)


def check_pipeline(cfg: TrainConfig) -> None:
    """Refuse what pipelining cannot do correctly (see the module docstring)."""
    n = cfg.algorithm.max_staleness
    if n == 0:
        return
    from softverify.verifiers.base import verifier_class

    policy = [v.display_name for v in cfg.verifiers if verifier_class(v.kind).needs_policy]
    if policy:
        raise ConfigError(
            f"algorithm.max_staleness = {n} cannot be used with verifiers that score with the policy ({policy}): "
            f"their rewards would come from a policy up to {n} steps old with nothing correcting them; "
            f"use algorithm.max_staleness = 0")


def check_resume(checkpoint: Path, state: dict[str, Any], bound: int) -> None:
    """Refuse to resume a checkpoint whose in-flight batches would train further behind the
    policy that sampled them than ``bound`` (a run saved with a larger max_staleness)."""
    batches = (state.get("pipeline") or {}).get("batches", [])
    lags = {b["step"]: b["step"] - 1 - min(r["version"] for r in b["rounds"]) for b in batches}
    if lags and max(lags.values()) > bound:
        worst = max(lags.values())
        raise ConfigError(
            f"checkpoint {str(checkpoint)!r} holds rollouts for steps {sorted(lags)} that would train up to {worst} "
            f"steps behind the policy that sampled them, more than algorithm.max_staleness = {bound}; resume with "
            f"algorithm.max_staleness >= {worst}")


def samples_to_arrays(samples: Sequence[Sample]) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Samples as flat numeric arrays (each ragged field plus ``<field>.len``) and JSON records
    of the rest; :func:`samples_from_arrays` inverts it exactly."""
    arrays: dict[str, np.ndarray] = {}
    for name, dtype in _ARRAYS.items():
        vals = [getattr(s, name) for s in samples]
        arrays[f"{name}.len"] = np.array([len(v) for v in vals], dtype=np.int64)
        arrays[name] = np.array([x for v in vals for x in v], dtype=dtype)
    records = [{k: getattr(s, k) for k in _TEXT} for s in samples]
    return arrays, records


def samples_from_arrays(arrays: dict[str, np.ndarray], records: list[dict[str, Any]]) -> list[Sample]:
    cols: dict[str, list[list]] = {}
    for name in _ARRAYS:
        lens, flat = arrays[f"{name}.len"], arrays[name].tolist()
        if len(lens) != len(records) or int(lens.sum()) != len(flat):
            raise ValueError(f"in-flight batch: {name} holds {len(flat)} values for lengths summing to "
                             f"{int(lens.sum())} over {len(lens)} samples; expected {len(records)} samples")
        ends = np.cumsum(lens).tolist()
        cols[name] = [flat[e - n:e] for e, n in zip(ends, lens.tolist())]
    return [Sample(**rec, **{name: cols[name][i] for name in _ARRAYS}) for i, rec in enumerate(records)]


def pending_index(batches: Sequence[PendingBatch]) -> dict:
    """What trainer_state.json records of the in-flight batches: per batch its step and seed,
    per round the file stem, the weights version that sampled it and its timings."""
    index = []
    for batch in batches:
        if not batch.done:
            raise RuntimeError(f"in-flight batch of step {batch.step} is not scored yet; cannot checkpoint it")
        rounds = [{"name": f"step{batch.step:06d}_round{k}", "version": int(r.version),
                   "rollout_s": float(r.rollout_s), "verify_s": float(r.verify_s)}
                  for k, r in enumerate(batch.rounds)]
        index.append({"step": batch.step, "seed": batch.seed, "rounds": rounds})
    return {"batches": index}


def write_pending(directory: Path, batches: Sequence[PendingBatch], samples: Sequence[Sequence[list[Sample]]]) -> None:
    """Write every round of ``batches`` (``samples[b][k]``: round k's samples) under
    ``directory``, named as :func:`pending_index` says: ``<name>.safetensors`` (token ids,
    behaviour logprobs, group ids, scores) and ``<name>.json`` (texts, metadata)."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    for batch, entry, parts in zip(batches, pending_index(batches)["batches"], samples):
        for r, info, ss in zip(batch.rounds, entry["rounds"], parts):
            arrays, records = samples_to_arrays(ss)
            arrays["group_ids"] = np.asarray(r.group_ids)  # dtypes kept: the rebuilt round equals the saved one
            arrays["scores"] = np.asarray(r.scores)
            save_file(arrays, str(directory / f"{info['name']}.safetensors"))
            write_text_atomic(directory / f"{info['name']}.json", json.dumps(records))


def load_pending(directory: Path,
                 index: dict) -> list[tuple[PendingBatch, list[tuple[dict, list[Sample], np.ndarray]]]]:
    """The batches :func:`write_pending` wrote: per batch, ``(PendingBatch without rounds,
    [(round info with group_ids, samples, scores)])``; ``RoundRunner.restore`` rebuilds the rounds."""
    from safetensors.numpy import load_file

    out = []
    for b in index["batches"]:
        rounds = []
        for r in b["rounds"]:
            arrays = load_file(str(directory / f"{r['name']}.safetensors"))
            records = json.loads((directory / f"{r['name']}.json").read_text())
            info = {"version": r["version"], "rollout_s": r["rollout_s"], "verify_s": r["verify_s"],
                    "group_ids": arrays.pop("group_ids")}
            scores = arrays.pop("scores")
            rounds.append((info, samples_from_arrays(arrays, records), scores))
        out.append((PendingBatch(step=int(b["step"]), seed=int(b["seed"])), rounds))
    return out
