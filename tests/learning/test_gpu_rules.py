"""Placement rules of the GPU path that hold without a GPU: which backend the weight
broadcast takes, and which device a CUDA learner rank uses."""
from softverify.collective_sync import broadcast_backend


def test_nccl_only_between_whole_gpus():
    """NCCL refuses two ranks on one device, and Ray packs fractional GPUs onto one device."""
    assert broadcast_backend(1, 1) == "nccl" and broadcast_backend(2, 1) == "nccl"
    assert broadcast_backend(0.5, 1) == "gloo"  # a learner rank sharing its GPU (e.g. with vLLM)
    assert broadcast_backend(1, 0.5) == "gloo"
    assert broadcast_backend(0, 1) == broadcast_backend(1, 0) == broadcast_backend(0, 0) == "gloo"


def test_cuda_local_rank_follows_ray_gpu_ids_when_ray_leaves_cuda_visible_devices_alone():
    from softverify.learner import cuda_local_rank

    assert cuda_local_rank({}, [3]) == "0"  # Ray narrowed CUDA_VISIBLE_DEVICES: the actor's GPU is device 0
    assert cuda_local_rank({"LOCAL_RANK": "1"}, []) == "1"
    assert cuda_local_rank({"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}, [3]) == "3"
    assert cuda_local_rank({"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}, ["2", "3"]) == "2"
    assert cuda_local_rank({"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}, []) == "0"


def test_gpu_defaults_fill_only_unset_keys():
    """The peers' GPU recipe: bf16 rollout on GPU workers; fp32 masters under bf16 autocast and
    no glibc memory retention on GPU ranks -- only where the user left the key unset."""
    from softverify.config import build_config

    gpu = ["learner.num_gpus_per_rank=1", "rollout.num_gpus_per_worker=1"]
    c = build_config({}, gpu)
    assert (c.rollout.dtype, c.learner.mixed_precision, c.learner.retain_freed_memory) == ("bfloat16", "bf16", False)
    assert c.learner.sync_dtype == "bfloat16"  # follows the rollout dtype
    c = build_config({}, gpu + ["rollout.dtype=float32", "learner.mixed_precision=no",
                                "learner.retain_freed_memory=true"])
    assert (c.rollout.dtype, c.learner.mixed_precision, c.learner.retain_freed_memory) == ("float32", "no", True)
    c = build_config({}, ["learner.num_gpus_per_rank=1", "model.dtype=bfloat16"])  # bf16 weights: no fp32 masters
    assert c.learner.mixed_precision == "no" and c.rollout.dtype is None
    c = build_config()  # CPU: unchanged
    assert (c.rollout.dtype, c.learner.mixed_precision, c.learner.retain_freed_memory) == (None, "no", True)


def test_the_k8s_training_config_generates_on_its_vllm_group_with_the_gpu_recipe():
    from pathlib import Path

    import yaml

    from softverify.config import build_config

    cm = yaml.safe_load((Path(__file__).resolve().parents[2] / "k8s" / "train-config.yaml").read_text())
    cfg = build_config(yaml.safe_load(cm["data"]["train.yaml"]))
    assert cfg.rollout.engine == "vllm" and cfg.rollout.num_gpus_per_worker >= 1
    assert cfg.prompt.style == "cot" and cfg.algorithm.estimator != "enumerate"  # completions are sampled
    assert cfg.rollout.top_p == 1.0 and cfg.rollout.top_k == 0
    assert cfg.model.dtype == "float32" and cfg.learner.mixed_precision == "bf16" and cfg.rollout.dtype == "bfloat16"
    assert not cfg.learner.retain_freed_memory
