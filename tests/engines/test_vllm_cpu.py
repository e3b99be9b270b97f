"""The vLLM engine run for real, wherever vLLM imports (its CPU build: scripts/vllm_cpu_env.sh,
then ``VENV/bin/python -m pytest -q tests/engines/test_vllm_cpu.py``; skipped elsewhere).

benchmarks/vllm_cpu_check.py in a subprocess (vLLM starts its engine-core process with
spawn, and the check must not share a process with pytest's other tests): the engine in its
own process as in production, generation with logprobs against an HF fp32 forward on the
same tokens, weight updates through the worker extension (the actor's own group and the
learner's), the generation changing, the prefix cache reset, and the refusals."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_vllm_engine_takes_weight_updates_and_matches_the_learners_logprobs(tmp_path):
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "vllm_cpu_check.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env=env)
    res = json.loads((tmp_path / "vllm_cpu_check.json").read_text())
    assert p.returncode == 0, (res.get("failures"), p.stderr[-3000:])
    assert res["failures"] == []
    assert res["multiprocessing"] == "1"
    assert res["max_abs_logprob_gap_before"] < res["logprob_tol"]
    assert res["max_abs_logprob_gap_after"] < res["logprob_tol"]
    assert res["max_abs_logprob_gap_learner_group"] < res["logprob_tol"]
    assert res["max_abs_next_token_gap"] < res["logprob_tol"] and res["max_abs_next_token_vs_score"] < res["logprob_tol"]
    assert res["generation_changed"] and res["greedy_before"] != res["greedy_after"]
    assert res["cached_tokens_repeat"] > 0 and res["cached_tokens_after_update"] == 0
    assert res["prefix_cache_resets"] == 2
    assert res["norm_sum_engine"] == pytest.approx(res["norm_sum_pushed"], rel=1e-9)
    assert all(v for v in res["refused"].values())
