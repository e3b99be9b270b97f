"""SIGKILL at random moments of checkpoint writes: ``latest`` never names a torn checkpoint.

A child process saves checkpoints in a loop with the real :mod:`softverify.platform.train.checkpoint`
(each checkpoint: many files, so a kill lands inside the model write, the rename, the
re-save of the same step or the pruning of old ones). After every kill the parent checks
that ``latest()`` resolves to a complete checkpoint whose files all match its step.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relutil import REPO, wait_for
from softverify.platform.train import checkpoint as ckpt

pytestmark = pytest.mark.timeout(300)

N_FILES = 40

WRITER = r"""
import json, sys
from pathlib import Path
from softverify.platform.train import checkpoint as ckpt

root = Path(sys.argv[1]); start = int(sys.argv[2]); n_files = int(sys.argv[3])

def writer(step):
    def write_model(ds, hf):
        for d in (ds, hf):
            d.mkdir(parents=True)
            for i in range(n_files):
                (d / f"part{i:03d}.bin").write_bytes(str(step).encode() * 2000)
    return write_model

step = start
while True:
    state = {"step": step, "data_position": 2 * step}
    ckpt.save(root, step, state, writer(step), keep=2)
    ckpt.save(root, step, state, writer(step), keep=2)  # re-saving the same step (final save after a periodic one)
    print(step, flush=True)
    step += 1
"""


def _check_complete(root: Path) -> int | None:
    last = ckpt.latest(root)
    if last is None:
        return None
    step = ckpt.read_state(last)["step"]
    assert last.name == ckpt.step_name(step) or last.name.startswith(f".{ckpt.step_name(step)}")
    for d in ("ds", "hf"):
        files = sorted((last / d).iterdir())
        assert len(files) == N_FILES, f"{last}/{d} has {len(files)} of {N_FILES} files"
        assert all(f.read_bytes() == str(step).encode() * 2000 for f in files), f"{last}/{d} holds another step"
    return step


def test_sigkill_during_checkpoint_writes_never_tears_latest(tmp_path):
    root = tmp_path / "checkpoints"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(0)
    step, kills, newest = 1, 0, None
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    deadline = time.monotonic() + 90
    while kills < 20 and time.monotonic() < deadline:
        proc = subprocess.Popen([sys.executable, str(script), str(root), str(step), str(N_FILES)], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()  # at least one full checkpoint per child
            assert first.strip(), proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        kills += 1
        got = _check_complete(root)
        assert got is not None and (newest is None or got >= newest), (got, newest)
        newest = got
        step = got + 1
    assert kills >= 10
