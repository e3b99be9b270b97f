"""Shared helpers for the speed benchmarks: real prompts, machine facts, result files."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED_PERTURBQA = (REPO / ".." / "shared" / "data" / "perturbqa").resolve()

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rbio_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` real rbio1 knockdown questions (PerturbQA K562 train split), fixed order."""
    from softverify.bio.questions import load_questions
    from softverify.config import DataConfig

    ds = load_questions(DataConfig(mirror=str(SHARED_PERTURBQA), seed=seed), "train", limit=max(n, 8))
    return [ds[i] for i in range(n)]


def machine() -> dict:
    """What the numbers came from: commit, CPU, load average (the box is shared)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", True
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"commit": commit, "worktree_dirty": dirty, "cpu": cpu, "cores": os.cpu_count(),
            "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "torch": torch.__version__, "loadavg": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_result(name: str, payload: dict) -> Path:
    from softverify.infra.fsutil import write_text_atomic  # a reader never sees half a result

    RESULTS.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(RESULTS / f"{name}.json", json.dumps(payload, indent=2, default=float) + "\n")
