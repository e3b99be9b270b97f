"""benchmarks/gpu_path.py (the prepared GPU check, issue 16) runs end to end on CPUs with a
tiny shape, in a subprocess (it initialises DeepSpeed's process group): the engine's
behaviour logprobs equal the learner's, a GRPO step changes the weights, and after the
collective broadcast the engine's logprobs equal the learner's again."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_path_script_runs_on_cpu(tmp_path):
    out = "gpu_path_cpu_test"
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_path.py"), "--shape", "tiny", "--device", "cpu",
                        "--prompts", "4", "--group", "2", "--new-tokens", "12", "--out", out],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    res_file = REPO / "benchmarks" / "results" / f"{out}.json"
    try:
        res = json.loads(res_file.read_text())
    finally:
        res_file.unlink(missing_ok=True)
    assert res["generate"]["tokens"] > 0 and res["generate"]["tokens_per_s"] > 0
    assert res["behaviour_vs_learner_max_abs_logprob_gap"] < 1e-4
    assert res["learn"]["grad_norm"] > 0 and res["learn"]["entropy"] > 0
    s = res["sync"]
    assert s["backend"] == "gloo" and s["bytes"] == res["params"] * 4  # fp32 wire, tied lm_head not sent
    assert s["engine_vs_learner_gap_before"] > 1e-4  # the step moved the learner away from the engine
    assert s["engine_vs_learner_gap_after"] < 1e-5  # and the broadcast brought the engine along
