"""Helpers for the reliability suite (imported by its test modules)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]


def tiny_overrides(model_dir: Path, prompts: Path, out: Path, **over) -> list[str]:
    """2 rollout workers, 2 learner ranks, 8 samples a step, one micro-batch per rank (so the
    first-step importance ratio is exactly 1 when rollouts come from the current policy)."""
    ov = [
        f"model.path={model_dir}", "data.source=file", f"data.path={prompts}", f"trainer.output_dir={out}",
        "rollout.num_workers=2", "rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8",
        "rollout.stop=[]", "rollout.placement.num_cpus=0.25", "learner.num_ranks=2", "learner.placement.num_cpus=0.25",
        "learner.micro_batch_size=4", "learner.lr=1e-2", "trainer.progress=false", "trainer.steps=2",
        "trainer.checkpoint_every=1", "trainer.keep_checkpoints=5",
        # these tests are about faults, not dynamics: every group reaches the learner (a random
        # tiny model's groups are often all-equal), and every weight trains and syncs
        "algorithm.dynamic_sampling=none", "learner.train_layers=null", "learner.lr_warmup_steps=0",
        "algorithm.estimator=sample", "algorithm.advantage=grpo", "algorithm.entropy_coef=0",
        "verifiers=[{kind: hard}, {kind: format, weight: 0.5}, {kind: length, weight: 1.0, params: {max_chars: 200}}]",
    ]
    return ov + [f"{k}={v}" for k, v in over.items()]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0")
    env.pop("RAY_ADDRESS", None)  # each CLI run starts its own local cluster
    return env


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def find_actor_procs(root_pid: int, class_name: str) -> list[psutil.Process]:
    """Actor processes of ``class_name`` started under ``root_pid`` (Ray titles them ``ray::Class...``)."""
    out = []
    for p in descendants(root_pid):
        try:
            title = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if title.startswith(f"ray::{class_name}"):
            out.append(p)
    return out


def kill_tree(procs: list[psutil.Process]) -> None:
    """SIGKILL processes this test started (by pid), ignoring those already gone."""
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def wait_for(pred, timeout: float, what: str, interval: float = 0.2):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
