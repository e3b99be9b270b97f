"""Shared pieces of the reliability suite: a tiny training config, a prompt file, process helpers.

Fault tests run real components (Ray, DeepSpeed on gloo, the HF engine with a 2-layer random
Llama) and inject real faults: SIGKILL of actor and driver processes, exceptions inside a
checkpoint write. They are marked ``slow`` (registered here) but run in the default suite.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real-cluster fault injection (runs by default; -m 'not slow' skips)")


@pytest.fixture(scope="session")
def prompt_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    genes = ["TP53", "MYC", "GATA1", "KLF1", "CDKN1A", "HBG1", "TAL1", "LMO2"]
    p = tmp_path_factory.mktemp("prompts") / "q.jsonl"
    with open(p, "w") as f:
        for i in range(24):
            a, b = rng.choice(genes, 2, replace=False)
            f.write(json.dumps({
                "question": f"Is a knockdown of {a} in K562 cells likely to result in differential expression of {b}?",
                "pert": str(a), "gene": str(b), "cell_line": "k562", "label": int(rng.integers(0, 2)),
                "split": "train" if i < 16 else "test",
            }) + "\n")
    return p


