"""Off-policy pipelining (``algorithm.max_staleness``): in-flight batch storage, the loss on a
stale batch against a reference built from grpo.py, exact resume, and the on-policy default.

The run tests use a real local Ray cluster and a DeepSpeed (gloo) learner on a tiny random
model, one micro-batch per rank: the resume test at the default 2 rollout workers x 2 ranks,
the others at 1 x 1 (``ONE``), where the layout is not what they test.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from softverify.config import ConfigError, build_config
from softverify.platform.train import checkpoint as ckpt
from softverify.platform.train.pipeline import (PendingBatch, Round, check_pipeline, check_resume, load_pending,
                                                pending_index, samples_from_arrays, samples_to_arrays, write_pending)
from softverify.types import Sample

pytestmark = pytest.mark.timeout(900)


def _cfg(model_dir: Path, prompts: Path, out: Path, **over):
    ov = [
        f"model.path={model_dir}", "data.source=file", f"data.path={prompts}", f"trainer.output_dir={out}",
        "rollout.num_workers=2", "rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8",
        "rollout.stop=[]", "learner.num_ranks=2", "learner.micro_batch_size=4", "learner.lr=1e-2",
        "learner.train_layers=null", "learner.lr_warmup_steps=0", "trainer.progress=false", "trainer.steps=2",
        "trainer.checkpoint_every=1", "trainer.keep_checkpoints=5", "trainer.diagnostics=false",
        "algorithm.dynamic_sampling=none", "algorithm.estimator=sample", "algorithm.advantage=grpo",
        "algorithm.entropy_coef=0",
        # a random tiny model never answers: hard/format are flat, length varies in every group
        "verifiers=[{kind: hard}, {kind: format, weight: 0.5}, {kind: length, weight: 1.0, params: {max_chars: 200}}]",
    ]
    return build_config({}, ov + [f"{k}={v}" for k, v in over.items()])


ONE = {"rollout.num_workers": 1, "learner.num_ranks": 1, "learner.micro_batch_size": 8}  # one micro-batch


def _rows(out: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(l) for l in (out / name).read_text().splitlines() if l.strip()]


def _fit(cfg, resume=False, on_step=None) -> list[dict]:
    from softverify.platform.train.trainer import Trainer

    tr = Trainer(cfg, resume=resume, on_step=on_step)
    try:
        tr.fit()
    finally:
        tr.shutdown()
    return _rows(Path(cfg.trainer.output_dir))


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(d / "model.safetensors"))


def _samples() -> list[Sample]:
    return [
        Sample("p0", "prompt é", "yes", {"label": 1, "pert": "TP53", "x": None, "f": 0.1}, group=3,
               prompt_token_ids=[1, 2, 3], completion_token_ids=[7, 8], behaviour_logprobs=[-0.1234567890123, -2.5],
               finish_reason="stop"),
        Sample("p1", "", "", {}, group=0, prompt_token_ids=[4], completion_token_ids=[], behaviour_logprobs=[]),
    ]


# ---------------------------------------------------------------------------- storage, no Ray


def test_samples_round_trip_exactly():
    s = _samples()
    arrays, records = samples_to_arrays(s)
    json_back = json.loads(json.dumps(records))
    assert samples_from_arrays(arrays, json_back) == s
    arrays["completion_token_ids.len"][0] = 1  # lengths that disagree with the data are refused
    with pytest.raises(ValueError, match="completion_token_ids holds 2 values for lengths summing to 1"):
        samples_from_arrays(arrays, json_back)


def test_pending_batches_written_and_read_back(tmp_path):
    rnd = Round(None, np.array([3, 0]), 4, rollout_s=1.5, verify_s=0.25, scores=np.array([[1.0, np.nan], [0.0, 0.5]]))
    b = PendingBatch(step=6, seed=11, rounds=[rnd], done=True)
    index = pending_index([b])
    assert index == {"batches": [{"step": 6, "seed": 11, "rounds": [
        {"name": "step000006_round0", "version": 4, "rollout_s": 1.5, "verify_s": 0.25}]}]}
    write_pending(tmp_path, [b], [[_samples()]])
    [(pb, [(info, samples, scores)])] = load_pending(tmp_path, json.loads(json.dumps(index)))
    assert (pb.step, pb.seed, pb.rounds, pb.done) == (6, 11, [], False)
    assert samples == _samples()
    np.testing.assert_array_equal(info["group_ids"], rnd.group_ids)
    np.testing.assert_array_equal(scores, rnd.scores)  # NaN where the verifier abstained
    assert info["version"] == 4
    with pytest.raises(RuntimeError, match="batch of step 6 is not scored yet"):
        pending_index([PendingBatch(step=6, seed=11, rounds=[rnd])])


def test_resume_refuses_a_smaller_bound_than_the_checkpoint_needs(tmp_path):
    state = {"pipeline": {"batches": [{"step": 3, "seed": 0, "rounds": [{"version": 1}]}]}}
    check_resume(tmp_path, state, 1)  # trains at version 2: one step behind
    check_resume(tmp_path, {"step": 2}, 0)  # an on-policy checkpoint holds nothing in flight
    with pytest.raises(ConfigError, match=r"steps \[3\] that would train up to 1 steps behind .* "
                                          r"algorithm.max_staleness = 0; resume with algorithm.max_staleness >= 1"):
        check_resume(tmp_path, state, 0)


def test_config_default_is_on_policy_and_bad_values_are_refused(tiny_model_dir, prompt_file, tmp_path):
    assert build_config({}, []).algorithm.max_staleness == 0
    with pytest.raises(ConfigError, match="algorithm.max_staleness"):
        build_config({}, ["algorithm.max_staleness=-1"])
    cfg = _cfg(tiny_model_dir, prompt_file, tmp_path, **{
        "algorithm.max_staleness": 1, "verifiers": "[{kind: hard}, {kind: go_likelihood}]"})
    with pytest.raises(ConfigError, match=r"max_staleness = 1 cannot be used with verifiers that score with the "
                                          r"policy \(\['go_likelihood'\]\)"):
        check_pipeline(cfg)
    check_pipeline(cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(update={"max_staleness": 0})}))


# ---------------------------------------------------------------------------- runs


def _pad(rows: list[list[float]]) -> torch.Tensor:
    out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.float32)
    for b, r in enumerate(rows):
        out[b, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out


def test_stale_batch_loss_equals_the_off_policy_reference(ray_cluster, tiny_model_dir, prompt_file, tmp_path):
    """Step 2 of a max_staleness=1 run trains on the batch sampled before step 1's update.
    Its loss must be the clipped surrogate of the learner's current logprobs against the
    batch's *behaviour* logprobs (grpo.clipped_surrogate on the pieces, not the trainer)."""
    import ray

    from softverify.learner.losses import clipped_surrogate
    from softverify.platform.train.trainer import Trainer

    cfg = _cfg(tiny_model_dir, prompt_file, tmp_path / "run", **{"algorithm.max_staleness": 1, **ONE})
    tr = Trainer(cfg)
    try:
        tr.setup()
        m1 = tr.train_step()
        assert m1["pipeline/policy_lag"] == 0
        [ahead] = tr.pending
        assert ahead.step == 2 and ahead.done and [r.version for r in ahead.rounds] == [0]
        assert m1["data_position"] == 4  # step 2's prompts are drawn already
        samples = ray.get(ahead.rounds[0].ref)
        adv = torch.tensor(ahead.rounds[0].learn_values.astype(np.float32))
        current = tr.learners.logprobs(samples)  # the learner after step 1: the policy step 2 updates
        logp, old = _pad(current), _pad([s.behaviour_logprobs for s in samples])
        mask = (_pad([[1.0] * len(s.completion_token_ids) for s in samples]) > 0).float()
        ac = cfg.algorithm
        total = float(mask.sum())
        want, st = clipped_surrogate(logp, old, adv, mask, ac.eps_low, ac.eps_high, "token_mean", total_tokens=total)
        on_policy, _ = clipped_surrogate(logp, logp, adv, mask, ac.eps_low, ac.eps_high, "token_mean",
                                         total_tokens=total)
        assert abs(float(want) - float(on_policy)) > 1e-3, "the batch should be stale enough to tell the two apart"
        assert abs(st["ratio_mean"] - 1.0) > 1e-3
        m2 = tr.train_step()
        assert m2["pipeline/policy_lag"] == 1
        assert m2["pg_loss"] == pytest.approx(float(want), abs=2e-5)
        assert abs(m2["ratio_mean"] - 1.0) > 1e-3
        tr.logger.close()
    finally:
        tr.shutdown()


def test_on_policy_default_is_unchanged(ray_cluster, tiny_model_dir, prompt_file, tmp_path):
    """max_staleness=0 (the default): every batch comes from the weights it trains, so with one
    micro-batch per rank the importance ratio is 1 at every step, and nothing is in flight."""
    out = tmp_path / "run"
    rows = _fit(_cfg(tiny_model_dir, prompt_file, out, **ONE))
    assert [r["pipeline/policy_lag"] for r in rows] == [0, 0]
    assert [r["data_position"] for r in rows] == [2, 4]
    for r in rows:
        assert r["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    for step in (1, 2):
        d = out / "checkpoints" / ckpt.step_name(step)
        assert "pipeline" not in ckpt.read_state(d) and not (d / "pipeline").exists()


def test_pipelined_resume_reproduces_the_uninterrupted_run(ray_cluster, tiny_model_dir, prompt_file, tmp_path):
    """3 steps at max_staleness=1 vs 2 steps, then --resume to 3: step 3 trains on the batch
    the first run sampled with step 1's weights and stored in checkpoint 2, so the weights,
    losses and samples equal the uninterrupted run's."""
    over = {"algorithm.max_staleness": 1}
    ref_out, out = tmp_path / "ref", tmp_path / "resumed"
    ref = _fit(_cfg(tiny_model_dir, prompt_file, ref_out, **{**over, "trainer.steps": 3}))
    _fit(_cfg(tiny_model_dir, prompt_file, out, **{**over, "trainer.steps": 2}))
    saved = ckpt.read_state(out / "checkpoints" / ckpt.step_name(2))
    assert saved["data_position"] == 6  # steps 1-3's prompts: step 3's batch is in flight
    [batch] = saved["pipeline"]["batches"]
    assert batch["step"] == 3 and [r["version"] for r in batch["rounds"]] == [1]
    assert (out / "checkpoints" / ckpt.step_name(2) / "pipeline" / "step000003_round0.safetensors").is_file()
    from softverify.platform.train.trainer import Trainer

    refused = Trainer(_cfg(tiny_model_dir, prompt_file, out, **{"trainer.steps": 3}), resume=True)
    try:
        with pytest.raises(ConfigError, match="resume with algorithm.max_staleness >= 1"):
            refused.setup()
    finally:
        refused.shutdown()
    rows = _fit(_cfg(tiny_model_dir, prompt_file, out, **{**over, "trainer.steps": 3}), resume=True)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["pipeline/policy_lag"] for r in rows] == [r["pipeline/policy_lag"] for r in ref] == [0, 1, 1]
    assert [r["data_position"] for r in rows] == [r["data_position"] for r in ref] == [4, 6, 8]
    for key in ("pg_loss", "reward_mean", "ratio_mean", "grad_norm"):
        assert [r[key] for r in rows] == pytest.approx([r[key] for r in ref], abs=1e-6), key
    for step in (1, 2, 3):
        a, b = _weights(out / "checkpoints" / ckpt.step_name(step) / "hf"), \
            _weights(ref_out / "checkpoints" / ckpt.step_name(step) / "hf")
        assert all(torch.equal(a[k], b[k]) for k in b), f"checkpoint {step} differs"
    a, b = _weights(out / "final"), _weights(ref_out / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)
    seen = [(r["step"], r["prompt_id"], r["completion"]) for r in _rows(out, "samples.jsonl")]
    assert seen == [(r["step"], r["prompt_id"], r["completion"]) for r in _rows(ref_out, "samples.jsonl")]


def test_refill_rounds_in_pipelined_mode(ray_cluster, tiny_model_dir, prompt_file, tmp_path):
    """The hard verifier gives a random model 0 everywhere: every group is flat. Step 1 draws
    its 2 refill rounds, and step 2's batch, rolled out ahead, draws its own too."""
    from softverify.platform.train.trainer import Trainer

    cfg = _cfg(tiny_model_dir, prompt_file, tmp_path / "run", **{
        "trainer.steps": 1, "verifiers": "[{kind: hard}]", "algorithm.dynamic_sampling": "refill",
        "algorithm.max_refill_rounds": 2, "trainer.checkpoint_every": 0, "algorithm.max_staleness": 1, **ONE})
    tr = Trainer(cfg)
    try:
        tr.setup()
        m = tr.train_step()
        assert m["dynamic/refill_rounds"] == 2 and m["dynamic/groups_kept"] == 0 and "grad_norm" not in m
        [ahead] = tr.pending
        assert ahead.done and len(ahead.rounds) == 3 and m["data_position"] == 12
        tr.logger.close()
    finally:
        tr.shutdown()


def test_enumerate_needs_no_correction_so_pipelining_changes_nothing(ray_cluster, tiny_model_dir, prompt_file,
                                                                      tmp_path):
    """With the enumerated estimator a batch is the closed candidate set scored by verifiers
    that ignore the policy, and the loss takes its distribution from the learner's forward:
    a batch built a step early is the batch built now, so max_staleness=1 trains exactly the
    weights max_staleness=0 does (while the batches are built one step ahead)."""
    over = {"algorithm.estimator": "enumerate", "rollout.stop": "['</answer>']", "verifiers": "[{kind: hard}]",
            "trainer.steps": 3, "trainer.checkpoint_every": 0, "learner.lr": 3e-3, "algorithm.dynamic_sampling": "filter",
            **ONE}
    rows = {n: _fit(_cfg(tiny_model_dir, prompt_file, tmp_path / f"s{n}", **{**over, "algorithm.max_staleness": n}))
            for n in (0, 1)}
    assert [r["pipeline/policy_lag"] for r in rows[1]] == [0, 1, 1]
    assert [r["data_position"] for r in rows[1]] == [r["data_position"] + 2 for r in rows[0]]  # one batch ahead
    assert [r["pg_loss"] for r in rows[1]] == [r["pg_loss"] for r in rows[0]]
    a, b = _weights(tmp_path / "s0" / "final"), _weights(tmp_path / "s1" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], w) for k, w in _weights(tiny_model_dir).items() if k in a)  # it did learn
