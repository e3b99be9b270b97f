"""A run's Ray side before its first step: the cluster it runs on, checked against what its
actors will reserve before any of them starts, the rollout workers, and where every actor
went (``placement.json``).

Each refusal here comes before Ray starts or before an actor waits for resources it can
never get: a run that cannot be placed says why in one line instead of hanging.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import ray

from softverify.actors.group import ActorGroup
from softverify.config import ConfigError, TrainConfig
from softverify.infra import placement
from softverify.infra.cluster import connect, usable_cpus
from softverify.infra.fsutil import write_text_atomic


def required_resources(cfg: TrainConfig) -> dict[str, float]:
    """What the run's actors reserve together: CPU, GPU, and any custom resources asked for."""
    return placement.totals(placement.role_requests(cfg))


def resource_breakdown(cfg: TrainConfig, res: str) -> str:
    """Which config keys ask for ``res`` ('CPU', 'GPU' or a custom resource), and how much each."""
    return placement.breakdown(placement.role_requests(cfg), res)


def check_extras(cfg: TrainConfig) -> None:
    """Optional extras the config turns on, refused here, before Ray starts, rather than by an
    import error after the actors are up."""
    import importlib.util

    if cfg.trainer.wandb:
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("trainer.wandb=true needs the wandb package: pip install 'softverify[wandb]' "
                              "(offline mode works without a login), or drop trainer.wandb")
    if cfg.trainer.tensorboard:
        if importlib.util.find_spec("tensorboard") is None:  # torch.utils.tensorboard writes through it
            raise ConfigError("trainer.tensorboard=true needs the tensorboard package: pip install "
                              "'softverify[tensorboard]' (or tensorboard==2.21.0), or drop trainer.tensorboard")


def init_ray(cfg: TrainConfig) -> None:
    """Attach to ``trainer.ray_address`` (or RAY_ADDRESS), else start a local cluster big
    enough (logically) for the run's CPU requests; then refuse, before any actor starts, a
    request the cluster cannot place (see :func:`softverify.infra.placement.check_placement`):
    GPUs on a CPU cluster, a custom resource or node label no node has."""
    need = required_resources(cfg)
    if not ray.is_initialized():
        address = cfg.trainer.ray_address or os.environ.get("RAY_ADDRESS")
        if not address:
            local_gpus = _local_gpu_count()
            if need["GPU"] > local_gpus + 1e-9:  # refuse before starting Ray (seconds and log lines saved)
                raise ConfigError(
                    f"impossible resource request: the run needs {need['GPU']:g} GPU in total but this machine "
                    f"has {local_gpus}; lower {resource_breakdown(cfg, 'GPU')}")
            custom = sorted(set(need) - {"CPU", "GPU"})
            if custom:  # a local Ray declares no custom resources: these actors could never start
                raise ConfigError(
                    f"impossible resource request: custom resources {custom} ({resource_breakdown(cfg, custom[0])}) "
                    f"exist only on a cluster whose nodes declare them; set trainer.ray_address (or RAY_ADDRESS) "
                    f"to such a cluster, or remove them")
        connect(address, num_cpus=max(usable_cpus(), math.ceil(need["CPU"])))  # real cores, not the host's
    placement.check_placement(placement.role_requests(cfg), ray.nodes())


def _local_gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001  (no usable CUDA: no GPUs)
        return 0


def start_rollout_workers(cfg: TrainConfig, model_path: str) -> ActorGroup:
    """``rollout.num_workers`` rollout workers with their reservations; Ray restarts a worker
    that dies (and retries its call), and the weights handle each call carries lets the new
    process catch up."""
    from softverify.actors.rollout import RolloutWorker

    rc = cfg.rollout
    opts = placement.actor_options(rc.placement)
    return ActorGroup(
        RolloutWorker.options(**opts, max_restarts=2, max_task_retries=2).remote(model_path, cfg.model, rc)
        for _ in range(rc.num_workers)
    )


def record_placement(out: Path, workers: ActorGroup, learners, pool) -> None:
    """Write ``placement.json``: the Ray node id of each actor, per role, and of the
    driver (where a run's actors went on a multi-node cluster); on more than one node,
    also say so in one line."""
    where = {
        "rollout_workers": workers.run("node_id"),
        "learner_ranks": learners.node_ids(),
        "verifiers": pool.node_ids(),
        "driver": [ray.get_runtime_context().get_node_id()],
    }
    write_text_atomic(out / "placement.json", json.dumps(where, indent=1))
    flat = {role: list(ids.values()) if isinstance(ids, dict) else ids for role, ids in where.items()}
    nodes = sorted({n for ids in flat.values() for n in ids})
    if len(nodes) > 1:
        short = {n: f"node {i}" for i, n in enumerate(nodes)}
        print("placement: " + "; ".join(f"{role} on {', '.join(sorted({short[n] for n in ids}))}"
                                        for role, ids in flat.items() if ids)
              + f" ({len(nodes)} Ray nodes; their ids are in placement.json)")
