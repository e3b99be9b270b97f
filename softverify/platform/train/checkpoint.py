"""Atomic step checkpoints and the ``latest`` pointer.

Layout under ``<output_dir>/checkpoints``::

    step_000010/            one complete checkpoint
        ds/                 DeepSpeed state of every rank (weights, optimizer, counters)
        hf/                 the policy as a standard safetensors HF directory
        trainer_state.json  step, data position, seeds, metrics so far
        pipeline/           algorithm.max_staleness > 0: the batches rolled out for the next
                            steps (safetensors + JSON; see platform/train/pipeline.py)
    latest                  text file naming the newest *complete* step directory

A checkpoint is written into a hidden temporary directory and renamed into place only
when every rank has finished; ``latest`` is replaced atomically afterwards. A crash at any
moment leaves either the previous checkpoint or the new one as ``latest``, never a torn one.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from softverify.infra.fsutil import write_text_atomic  # noqa: F401  (re-exported: many writers import it here)


def step_name(step: int) -> str:
    return f"step_{step:06d}"




def save(
    root: Path, step: int, state: dict[str, Any], write_model: Callable[[Path, Path], None], keep: int = 2
) -> Path:
    """Write checkpoint ``step``: ``write_model(ds_dir, hf_dir)`` fills the model parts."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = root / f".{step_name(step)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_model(tmp / "ds", tmp / "hf")
    write_text_atomic(tmp / "trainer_state.json", json.dumps(state, indent=2))
    old = _old(final)
    if final.exists():  # re-saving the same step (e.g. final save right after a periodic one)
        # ``latest`` may name ``final``: move it aside whole (one rename) instead of deleting
        # it in place, so a crash never leaves ``latest`` naming a half-deleted directory;
        # :func:`latest` falls back to the moved copy until the new one is in place.
        shutil.rmtree(old, ignore_errors=True)  # a complete ``final`` exists, so any old copy is stale
        os.replace(final, old)
    os.replace(tmp, final)
    write_text_atomic(root / "latest", final.name)
    shutil.rmtree(old, ignore_errors=True)
    _prune(root, keep)
    return final


def _old(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def _prune(root: Path, keep: int) -> None:
    """Drop all but the newest ``keep`` checkpoints (never the one ``latest`` names). Each is
    renamed to a hidden name first, so a crash mid-delete leaves no torn ``step_*`` directory."""
    ptr = root / "latest"
    current = ptr.read_text().strip() if ptr.is_file() else None
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in steps[:-keep]:
        if p.name == current:
            continue
        doomed = p.with_name(f".{p.name}.del")
        shutil.rmtree(doomed, ignore_errors=True)
        os.replace(p, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    for leftover in root.glob(".step_*.del"):  # from a crash during an earlier prune
        shutil.rmtree(leftover, ignore_errors=True)


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint, or None. Ignores temporary leftovers of a crash."""
    ptr = root / "latest"
    if not ptr.is_file():
        return None
    p = root / ptr.read_text().strip()
    if not (p / "trainer_state.json").is_file() and (_old(p) / "trainer_state.json").is_file():
        return _old(p)  # a crash while this step was being re-saved: its previous copy is whole
    if not (p / "trainer_state.json").is_file():
        raise FileNotFoundError(f"checkpoint pointer {str(ptr)!r} names {p.name!r}, which is incomplete or missing")
    return p


def read_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "trainer_state.json").read_text())
