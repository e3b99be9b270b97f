"""Process faults of `softverify train` (each run its own local Ray cluster, as a user starts it).

One scenario, three processes, checked against an uninterrupted reference run of the same
config started alongside:

1. a learner rank (a ``ray::LearnerActor`` process of this run) is SIGKILLed during step 2:
   the run stops with exit 1, a one-line message naming the last complete checkpoint and
   ``--resume``, and no traceback;
2. ``--resume`` continues from step 1; the *driver* is SIGKILLed right after checkpoint 2;
3. ``--resume`` again finishes step 3.

Nothing is lost: every checkpoint's weights and data position, the final weights, the
metrics rows and the prompts seen each step equal the reference run's, and ``latest``
always names a complete checkpoint.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from relutil import REPO, cli_env, descendants, find_actor_procs, kill_tree, tiny_overrides, wait_for
from softverify.platform.train import checkpoint as ckpt

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

STEPS = 3


def _train(model, prompts, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "softverify.cli", "train"]
    # one rollout worker: the faults are a learner rank's and the driver's (two ranks, so a
    # surviving rank is left blocked in a collective), and two runs share the 2 cores
    for ov in tiny_overrides(model, prompts, out, **{"trainer.steps": STEPS, "rollout.num_workers": 1}):
        args += ["--set", ov]
    return subprocess.Popen(args + list(extra), cwd=REPO, env=cli_env(), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _latest_name(out: Path) -> str | None:
    p = out / "checkpoints" / "latest"
    return p.read_text().strip() if p.is_file() else None


def _finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_tree(descendants(proc.pid))
        proc.kill()
        raise


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(d / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs between {a} and {b}"


def _rows(out: Path, name: str) -> list[dict]:
    return [json.loads(l) for l in (out / name).read_text().splitlines() if l.strip()]


def test_learner_rank_and_driver_killed_then_resumed(tiny_model_dir, prompt_file, tmp_path):
    ref_out, out = tmp_path / "reference", tmp_path / "faulty"
    ref = _train(tiny_model_dir, prompt_file, ref_out, tmp_path / "reference.log")
    started: list = []
    try:
        # 1. kill one learner rank during step 2
        p1 = _train(tiny_model_dir, prompt_file, out, tmp_path / "run1.log")
        wait_for(lambda: _latest_name(out) == "step_000001" or p1.poll() is not None, 900, "checkpoint 1")
        assert p1.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
        ranks = wait_for(lambda: find_actor_procs(p1.pid, "LearnerActor"), 60, "the learner rank processes")
        started += descendants(p1.pid)
        victim = max(ranks, key=lambda p: p.pid)
        victim.send_signal(signal.SIGKILL)
        rc = _finish(p1, 600)
        log1 = (tmp_path / "run1.log").read_text()
        assert rc == 1, log1[-3000:]
        assert "Traceback" not in log1, log1[-3000:]
        assert "softverify train: an actor died at step 2" in log1, log1[-3000:]
        assert f"the last complete checkpoint is {out / 'checkpoints' / 'step_000001'}" in log1
        assert "Re-run with --resume" in log1
        assert _latest_name(out) == "step_000001" and ckpt.latest(out / "checkpoints") is not None

        # 2. resume; SIGKILL the driver as soon as checkpoint 2 is complete
        p2 = _train(tiny_model_dir, prompt_file, out, tmp_path / "run2.log", "--resume")
        wait_for(lambda: _latest_name(out) == "step_000002" or p2.poll() is not None, 900, "checkpoint 2")
        assert p2.poll() is None, (tmp_path / "run2.log").read_text()[-3000:]
        tree = descendants(p2.pid)
        started += tree
        p2.send_signal(signal.SIGKILL)
        p2.wait(60)
        last = ckpt.latest(out / "checkpoints")  # never torn, whatever the kill interrupted
        assert last is not None and ckpt.read_state(last)["step"] in (2, 3)
        assert not (out / "final").exists()

        # 3. resume again to the end
        p3 = _train(tiny_model_dir, prompt_file, out, tmp_path / "run3.log", "--resume")
        rc3 = _finish(p3, 900)
        log3 = (tmp_path / "run3.log").read_text()
        assert rc3 == 0 and "Traceback" not in log3, log3[-3000:]
        assert _finish(ref, 900) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    finally:
        kill_tree([p for p in started if p.is_running()])
        if ref.poll() is None:
            kill_tree(descendants(ref.pid))
            ref.kill()

    # nothing lost: identical weights, data position, metrics rows and prompts per step
    for step in range(1, STEPS + 1):
        a, b = out / "checkpoints" / ckpt.step_name(step), ref_out / "checkpoints" / ckpt.step_name(step)
        sa, sb = ckpt.read_state(a), ckpt.read_state(b)
        assert (sa["step"], sa["data_position"]) == (sb["step"], sb["data_position"]) == (step, 2 * step)
        _same_weights(a / "hf", b / "hf")
    _same_weights(out / "final", ref_out / "final")
    m, mref = _rows(out, "metrics.jsonl"), _rows(ref_out, "metrics.jsonl")
    assert [r["step"] for r in m] == list(range(1, STEPS + 1)), "a step is missing or logged twice"
    assert [r["data_position"] for r in m] == [r["data_position"] for r in mref]
    assert [r["reward_mean"] for r in m] == pytest.approx([r["reward_mean"] for r in mref], abs=1e-9)
    seen = [(r["step"], r["prompt_id"]) for r in _rows(out, "samples.jsonl")]
    assert seen == [(r["step"], r["prompt_id"]) for r in _rows(ref_out, "samples.jsonl")]
