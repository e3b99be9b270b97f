"""benchmarks/gpu_path.py (the prepared GPU check, issues 16 and 38) runs end to end on CPUs
with a tiny shape, in a subprocess (it initialises DeepSpeed's process group): the preflight
prints the versions, a sampled-GRPO step under bf16 autocast over fp32 masters changes every
trained tensor, and after the collective broadcast the engine holds the learner's cast
weights bit for bit; the results land in the folder the caller names."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_path_script_runs_on_cpu_with_its_assertions(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_path.py"), "--shape", "tiny", "--device", "cpu",
                        "--prompts", "4", "--group", "2", "--new-tokens", "12", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    pre = [line for line in p.stdout.splitlines() if line.startswith("preflight: ")]
    assert len(pre) == 1 and json.loads(pre[0].removeprefix("preflight: "))["torch"]
    res = json.loads((out / "gpu_path.json").read_text())
    assert res["failures"] == []
    assert res["generate"]["tokens"] > 0 and res["hf_generate_baseline"]["tokens"] > 0
    assert res["learner"] == "fp32 masters, bf16 autocast" and res["lr"] == 1e-4
    learn = res["learn"]
    assert learn["grad_norm"] > 0 and learn["tensors_changed"] == learn["tensors_trained"] > 0
    s = res["sync"]
    assert s["backend"] == "gloo" and s["bytes"] == res["params"] * 4  # fp32 wire, tied lm_head not sent
    assert s["tensors_compared"] > 0 and s["tensors_mismatched"] == [] and s["tensors_missing"] == []
    assert s["engine_vs_learner_gap_before"] > s["engine_vs_learner_gap_after"]  # the step moved the learner
    # on CPU there is no card peak to hold the ratios against
    assert res["generate"]["weight_bandwidth_vs_peak"] is None and learn["mfu_vs_bf16_peak"] is None


def test_gpu_path_preflight_stops_with_one_line(tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_path.py"), "--device", "cuda", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    import torch

    if torch.cuda.is_available():
        return
    assert p.returncode != 0
    assert p.stderr.strip().splitlines()[-1] == ("preflight: missing a CUDA device (torch sees none; --device cpu "
                                                 "runs the CPU form)")
