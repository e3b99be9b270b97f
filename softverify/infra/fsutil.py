"""Atomic filesystem writes shared by everything that saves a directory or file.

A reader (a resumed run, a verifier loading a world model) must never see a half-written
artifact, so writers fill a hidden temporary sibling and move it into place with one rename.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_dir(out_dir: str | os.PathLike, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``out_dir``; on success it replaces ``out_dir``
    (with ``keep_existing``, where another process already put an ``out_dir`` there it is
    kept and this one dropped: for caches whose every writer produces the same content, and
    where a reader may hold the first one open).

    On an exception the temporary directory is removed and ``out_dir`` is left as it was.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        yield tmp
        if out.exists():
            if keep_existing:
                return
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` (ending in ``suffix``, for writers that
    pick a format by extension); on success it is fsynced and renamed onto ``path``. On an
    exception the temporary file is removed and ``path`` is left as it was."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # durable before it becomes visible under its name
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``path.write_text(text)``, but a reader sees the old file or the whole new one."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


class RunLockError(ValueError):
    """Another live run holds the output directory (a user error: one line, exit 2)."""


class RunLock:
    """``<dir>/.softverify.lock``: one run per output directory.

    Two trainers writing the same checkpoints and metrics would corrupt both, so the lock
    file (created with ``O_EXCL``) names its holder: PID, host and start time. A lock is
    stale, and taken over, when its holder's PID is gone on this host (or is this very
    process: a process runs one trainer at a time), or when it has not been refreshed
    (:meth:`refresh`, every step) for ``stale_after_s``. A holder on another host cannot be
    checked by PID; ``resuming`` runs (``--resume``/``--auto-resume``, e.g. a Kubernetes pod
    that replaced the one that died) take such a lock over, fresh runs are refused.
    """

    NAME = ".softverify.lock"

    def __init__(self, directory: str | os.PathLike, stale_after_s: float = 900.0):
        self.path = Path(directory) / self.NAME
        self.stale_after_s = stale_after_s
        self.held = False

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict, resuming: bool = False) -> str | None:
        """Why the existing lock is stale, or None if its holder may still be running."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "gone"
        if not holder:
            return "unreadable"
        if holder.get("host") == socket.gethostname():
            if holder.get("pid") == os.getpid():
                return "held by this process"
            try:
                os.kill(int(holder["pid"]), 0)
            except ProcessLookupError:
                return f"PID {holder['pid']} is not running"
            except (PermissionError, KeyError, ValueError, TypeError):
                pass
        elif resuming:
            return f"held on host {holder.get('host')!r}, which cannot be checked; resuming takes it over"
        if age > self.stale_after_s:
            return f"not refreshed for {age:.0f} s"
        return None

    def acquire(self, resuming: bool = False) -> str | None:
        """Take the lock; returns why an old lock was taken over (None if there was none).
        Raises :class:`RunLockError` naming the live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        taken_over = None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                why = self._stale(holder, resuming)
                if why is None:
                    raise RunLockError(
                        f"output_dir {str(self.path.parent)!r} is in use by PID {holder.get('pid')} on host "
                        f"{holder.get('host')!r} (lock {str(self.path)!r}); choose another trainer.output_dir, or "
                        f"delete the lock if that run is gone") from None
                taken_over = why
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return taken_over
        raise RunLockError(f"could not take {str(self.path)!r}: another process keeps creating it")

    def refresh(self) -> None:
        if self.held:
            os.utime(self.path)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
