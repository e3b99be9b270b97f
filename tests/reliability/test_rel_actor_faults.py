"""Actor faults inside a running GRPO loop (real local Ray cluster, real DeepSpeed, tiny model).

One Trainer serves the module. Faults are real: SIGKILL of an actor's process while a
step is in flight. What must hold afterwards:

- the step completes (Ray restarts the actor and retries its task), and
- the retried rollout sampled from the *current* policy. With one micro-batch per rank
  the first optimisation pass sees importance ratio exp(logp_learner - logp_behaviour)
  == 1 exactly when rollouts came from the learner's weights, so ``ratio_mean == 1`` and
  ``clip_frac == 0`` prove no stale sample slipped in. ``test_stale_rollouts_are_detected``
  shows the same check fails when a worker does sample from old weights.

The checkpoint-write fault (an exception in the middle of a real DeepSpeed save) runs on
the same trainer: ``latest`` must keep naming the previous complete checkpoint.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest
import ray
import torch
from safetensors.torch import load_file

from relutil import tiny_overrides, wait_for
from softverify.config import build_config
from softverify.platform.train import checkpoint as ckpt
from softverify.platform.train.trainer import Trainer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RATIO_TOL = 1e-4


def _pid(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=120)


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


@pytest.fixture(scope="module")
def trainer(tiny_model_dir, prompt_file, tmp_path_factory):
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    out = tmp_path_factory.mktemp("actor-faults") / "run"
    tr = Trainer(build_config({}, tiny_overrides(tiny_model_dir, prompt_file, out, **{"trainer.steps": 10})))
    try:
        tr.setup()
        m = tr.train_step()  # a first step so the policy differs from the initial weights
        assert abs(m["ratio_mean"] - 1) < RATIO_TOL, m
        yield tr
    finally:
        tr.shutdown()
        ray.shutdown()


def _step_with_fault(tr: Trainer, inject, max_new_tokens: int = 48) -> dict:
    """Run ``tr.train_step()`` in a thread; call ``inject()`` once rollout worker 0 is busy
    generating (its process starts burning CPU). Longer generations widen the window."""
    tr.cfg.rollout.max_new_tokens = max_new_tokens
    w0 = _pid(tr.workers[0])
    base = _cpu(w0)
    result: dict = {}

    def run():
        try:
            result["metrics"] = tr.train_step()
        except BaseException as e:  # noqa: BLE001 - reported below
            result["error"] = e

    th = threading.Thread(target=run)
    th.start()
    try:
        wait_for(lambda: _cpu(w0) - base > 0.05 or not th.is_alive(), 300, "rollout worker 0 to start generating",
                 interval=0.005)
        assert th.is_alive(), "the step finished before the fault could be injected"
        inject()
    finally:
        th.join(600)
        tr.cfg.rollout.max_new_tokens = 8
    assert not th.is_alive(), "the step hung after the fault"
    if "error" in result:
        raise result["error"]
    return result["metrics"]


def _assert_on_policy_and_synced(tr: Trainer, m: dict) -> None:
    assert abs(m["ratio_mean"] - 1) < RATIO_TOL and m["clip_frac"] == 0, (m["ratio_mean"], m["clip_frac"])
    # after the step every worker (restarted or not) holds the learner's new weights
    samples = ray.get(tr.rounds.rollout([0, 1], 7, tr.weights)[0])
    learner_lp = tr.learners.logprobs(samples)
    for w in tr.workers:
        for a, b in zip(ray.get(w.score.remote(samples)), learner_lp):
            np.testing.assert_allclose(a, b, atol=1e-4)


def test_rollout_worker_killed_mid_generate(trainer):
    tr = trainer
    before_step, before_pos = tr.step, tr.order.position
    victim = _pid(tr.workers[0])
    m = _step_with_fault(tr, lambda: os.kill(victim, signal.SIGKILL))
    assert tr.step == before_step + 1 and tr.order.position == before_pos + 2
    assert _pid(tr.workers[0]) != victim, "the worker should be a restarted process"
    assert m["response_len_mean"] > 8, "the retried generate ran with this step's max_new_tokens"
    _assert_on_policy_and_synced(tr, m)


def test_verifier_actor_killed_mid_step(trainer):
    tr = trainer
    pids = {j: _pid(a) for j, a in tr.pool.actors.items()}
    m = _step_with_fault(tr, lambda: [os.kill(p, signal.SIGKILL) for p in set(pids.values())])  # hosts may be shared
    for j, a in tr.pool.actors.items():
        assert _pid(a) != pids[j], f"verifier {tr.pool.names[j]} should have been restarted"
    # the restarted verifiers scored this step: every column present, length is never abstained
    assert m["reward/length"] is not None and m["abstain/length"] == 0.0
    assert m["abstain/format"] == 0.0
    _assert_on_policy_and_synced(tr, m)


def test_stale_rollouts_are_detected(trainer, tiny_model_dir):
    """The on-policy check above can fail: a worker that keeps the *initial* weights while
    claiming the current version produces ratio != 1."""
    tr = trainer
    init = load_file(str(tiny_model_dir / "model.safetensors"))
    init.pop("lm_head.weight", None)
    ray.get([w.load_weights.remote(init, tr.step) for w in tr.workers])
    m = tr.train_step()  # the step's final sync repairs the workers again
    assert abs(m["ratio_mean"] - 1) > 10 * RATIO_TOL or m["clip_frac"] > 0, m


def test_checkpoint_write_interrupted_keeps_latest(trainer):
    tr = trainer
    good = tr.save_checkpoint()
    good_w = load_file(str(good / "hf" / "model.safetensors"))
    assert ckpt.latest(tr.ckpt_root) == good
    tr.train_step()
    real = tr.learners.save_checkpoint

    def torn(directory, tag, hf_dir):  # the DeepSpeed state is written for real, then the disk "fills up"
        real(directory, tag, None)
        raise OSError(28, "No space left on device (injected while writing the HF weights)")

    tr.learners.save_checkpoint = torn
    try:
        with pytest.raises(OSError, match="No space left"):
            tr.save_checkpoint()
    finally:
        tr.learners.save_checkpoint = real
    assert ckpt.latest(tr.ckpt_root) == good
    assert ckpt.read_state(good)["step"] == tr.step - 1
    assert not (tr.ckpt_root / ckpt.step_name(tr.step)).exists()
    assert (tr.ckpt_root / f".{ckpt.step_name(tr.step)}.tmp").is_dir()  # the torn attempt, hidden
    w = load_file(str(good / "hf" / "model.safetensors"))
    assert all(torch.equal(w[k], good_w[k]) for k in good_w)
    # the next save succeeds over the leftovers, and the new checkpoint loads into the learners
    new = tr.save_checkpoint()
    assert ckpt.latest(tr.ckpt_root) == new and ckpt.read_state(new)["step"] == tr.step
    assert not (tr.ckpt_root / f".{ckpt.step_name(tr.step)}.tmp").exists()
    tr.learners.load_checkpoint(str(new / "ds"), "ds")
    restored = ray.get([a.state_dict.remote() for a in tr.learners.actors])[0]  # all ranks: ZeRO-3
    saved = load_file(str(new / "hf" / "model.safetensors"))
    assert all(torch.equal(restored[k], saved[k]) for k in saved)
