"""One run per output directory: a live holder is named, a stale lock is taken over."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from softverify.infra.fsutil import RunLock, RunLockError


def _lock_file(d, pid, host=None, age_s=0.0):
    p = d / RunLock.NAME
    p.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": time.time()}))
    if age_s:
        t = time.time() - age_s
        os.utime(p, (t, t))
    return p


def test_a_live_holder_is_refused_by_name(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_file(tmp_path, holder.pid)
        with pytest.raises(RunLockError, match=rf"in use by PID {holder.pid} on host '{socket.gethostname()}'"):
            RunLock(tmp_path).acquire()
        with pytest.raises(RunLockError):  # resuming does not take over a live local holder either
            RunLock(tmp_path).acquire(resuming=True)
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock is stale and taken over, with the reason
    lock = RunLock(tmp_path)
    assert lock.acquire() == f"PID {holder.pid} is not running"
    assert json.loads((tmp_path / RunLock.NAME).read_text())["pid"] == os.getpid()
    lock.refresh()
    lock.release()
    assert not (tmp_path / RunLock.NAME).exists()
    assert RunLock(tmp_path).acquire() is None  # nothing to take over


def test_foreign_host_locks_fresh_refused_old_or_resuming_taken(tmp_path):
    _lock_file(tmp_path, 1, host="other-node")
    with pytest.raises(RunLockError, match="on host 'other-node'"):
        RunLock(tmp_path).acquire()
    assert "cannot be checked" in RunLock(tmp_path).acquire(resuming=True)
    RunLock(tmp_path).release()
    (tmp_path / RunLock.NAME).unlink(missing_ok=True)
    _lock_file(tmp_path, 1, host="other-node", age_s=2000)
    assert RunLock(tmp_path, stale_after_s=900).acquire().startswith("not refreshed for")


def test_trainer_refuses_a_busy_output_dir(tmp_path):
    from softverify.config import build_config
    from softverify.platform.train.trainer import Trainer

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_file(tmp_path, holder.pid)
        tr = Trainer(build_config({"trainer": {"output_dir": str(tmp_path)}}))
        with pytest.raises(RunLockError, match="choose another trainer.output_dir"):
            tr.setup()  # refused before Ray starts or anything is written
        assert sorted(p.name for p in tmp_path.iterdir()) == [RunLock.NAME]
    finally:
        holder.kill()
        holder.wait()
