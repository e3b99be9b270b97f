"""Placement rules of the GPU path that hold without a GPU: which backend the weight
broadcast takes, and which device a CUDA learner rank uses."""
from softverify.sync.collective import broadcast_backend


def test_nccl_only_between_whole_gpus():
    """NCCL refuses two ranks on one device, and Ray packs fractional GPUs onto one device."""
    assert broadcast_backend(1, 1) == "nccl" and broadcast_backend(2, 1) == "nccl"
    assert broadcast_backend(0.5, 1) == "gloo"  # a learner rank sharing its GPU (e.g. with vLLM)
    assert broadcast_backend(1, 0.5) == "gloo"
    assert broadcast_backend(0, 1) == broadcast_backend(1, 0) == broadcast_backend(0, 0) == "gloo"


def test_cuda_local_rank_follows_ray_gpu_ids_when_ray_leaves_cuda_visible_devices_alone():
    from softverify.learner.deepspeed_compat import cuda_local_rank

    assert cuda_local_rank({}, [3]) == "0"  # Ray narrowed CUDA_VISIBLE_DEVICES: the actor's GPU is device 0
    assert cuda_local_rank({"LOCAL_RANK": "1"}, []) == "1"
    assert cuda_local_rank({"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}, [3]) == "3"
    assert cuda_local_rank({"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}, ["2", "3"]) == "2"
    assert cuda_local_rank({"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}, []) == "0"


def test_gpu_defaults_fill_only_unset_keys():
    """The peers' GPU recipe: bf16 rollout on GPU workers; fp32 masters under bf16 autocast and
    no glibc memory retention on GPU ranks -- only where the user left the key unset."""
    from softverify.config import build_config

    gpu = ["learner.placement.num_gpus=1", "rollout.placement.num_gpus=1"]
    c = build_config({}, gpu)
    assert (c.rollout.dtype, c.learner.mixed_precision, c.learner.retain_freed_memory) == ("bfloat16", "bf16", False)
    assert c.learner.sync_dtype == "bfloat16"  # follows the rollout dtype
    c = build_config({}, gpu + ["rollout.dtype=float32", "learner.mixed_precision=no",
                                "learner.retain_freed_memory=true"])
    assert (c.rollout.dtype, c.learner.mixed_precision, c.learner.retain_freed_memory) == ("float32", "no", True)
    c = build_config({}, ["learner.placement.num_gpus=1", "model.dtype=bfloat16"])  # bf16 weights: no fp32 masters
    assert c.learner.mixed_precision == "no" and c.rollout.dtype is None
    c = build_config()  # CPU: unchanged
    assert (c.rollout.dtype, c.learner.mixed_precision, c.learner.retain_freed_memory) == (None, "no", True)


def test_the_k8s_training_config_generates_on_its_vllm_group_with_the_gpu_recipe():
    from pathlib import Path

    import yaml

    from softverify.config import build_config

    cm = yaml.safe_load((Path(__file__).resolve().parents[2] / "k8s" / "train-config.yaml").read_text())
    cfg = build_config(yaml.safe_load(cm["data"]["train.yaml"]))
    assert cfg.rollout.engine == "vllm" and cfg.rollout.placement.num_gpus >= 1
    assert cfg.prompt.style == "cot" and cfg.algorithm.estimator != "enumerate"  # completions are sampled
    assert cfg.rollout.top_p == 1.0 and cfg.rollout.top_k == 0
    assert cfg.model.dtype == "float32" and cfg.learner.mixed_precision == "bf16" and cfg.rollout.dtype == "bfloat16"
    assert not cfg.learner.retain_freed_memory


def test_deepspeed_keeps_fp32_masters_for_a_bf16_model_at_zero_1_and_above():
    from softverify.config import build_config
    from softverify.learner.deepspeed_compat import deepspeed_config

    for stage in (1, 2, 3):
        ds = deepspeed_config(build_config({}, ["model.dtype=bfloat16", f"learner.zero_stage={stage}"]))
        assert ds["bf16"] == {"enabled": True} and ds["data_types"] == {"grad_accum_dtype": "fp32"}, stage
    for over in (["model.dtype=bfloat16", "learner.zero_stage=0"], ["learner.zero_stage=2"]):
        assert "bf16" not in deepspeed_config(build_config({}, over)), over  # ZeRO-0: DeepSpeed has no such mode


CODE = """
import json, sys, torch
import numpy as np
from softverify.infra.cluster import free_port
from softverify.config import build_config
from softverify.learner.rank import LearnBatch, Learner
from softverify.types import Sample
cfg = build_config({{"model": {{"path": {model!r}, "dtype": "bfloat16"}}, "learner": {{"num_ranks": 1,
                    "zero_stage": 2, "lr": 1e-4, "lr_warmup_steps": 0, "train_layers": None}},
                    "algorithm": {{"estimator": "sample"}}}}, [])
lr = Learner(cfg, {model!r}, master_port=free_port())
g = torch.Generator().manual_seed(0)
ss = [Sample("p", "q", str(i), {{}}, prompt_token_ids=torch.randint(10, 4000, (12,), generator=g).tolist(),
             completion_token_ids=torch.randint(10, 4000, (n,), generator=g).tolist(), behaviour_logprobs=[-10.5] * n)
      for i, n in enumerate([7, 5, 9, 3])]
before = {{k: v.detach().clone() for k, v in lr.engine.module.named_parameters()}}
m = lr.train_step(LearnBatch(ss, np.array([1.0, -1.0, 0.5, -0.5]), 24, 4))
after = dict(lr.engine.module.named_parameters())
print("RESULT", json.dumps({{"masters": sorted({{str(t.dtype) for t in lr.optimizer.single_partition_of_fp32_groups}}),
      "params": sorted({{str(p.dtype) for p in after.values()}}), "grad_norm": m["grad_norm"],
      "changed": sum(not torch.equal(before[k], after[k].detach()) for k in before)}}), flush=True)
"""


def test_a_bf16_model_trains_on_fp32_masters(tiny_model_dir):
    """A real DeepSpeed ZeRO-2 rank with a bf16 model: the optimiser's partitions are fp32, the
    module stays bf16, and one step moves it."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", CODE.format(model=str(tiny_model_dir))], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, out.stderr[-3000:]
    res = json.loads(lines[0].removeprefix("RESULT "))
    assert res["masters"] == ["torch.float32"] and res["params"] == ["torch.bfloat16"]
    assert res["grad_norm"] > 0 and res["changed"] > 0
