"""Running a sweep: the trial function, per-trial resources, the Tuner, and restore.

Each trial is one short GRPO training by the platform's own :class:`Trainer` -- the same
code path as ``softverify train`` -- so a sweep's best config trains the same way.

Resources: a trial's Trainer starts its own Ray actors (rollout workers, verifier actors,
learner ranks). Each trial therefore gets a placement group with two bundles: one for the
trial driver (``tune.resources.driver_cpus``) and one holding the sum of everything its
actors request (computed from the *sampled* config, so a trial with more verifiers or
workers reserves more). Tune places the trial in that group with child-task capture, so
the Trainer's actors land inside it and concurrent trials never steal each other's CPUs
or GPUs. One actor bundle rather than one bundle per actor: Ray places a captured actor in
*any* bundle with room, and exact-size per-actor bundles can fragment (a 0.25-CPU verifier
taking half of a worker's bundle) and deadlock. The cost: one trial's actors share a
node (trials themselves spread over the cluster's nodes); custom resources a role asks for
(``placement.resources``) go into that bundle, so the trial lands on a node that has
them, and node label selectors are refused (:func:`check_trial_placement`). Multi-node
trials would need the Trainer to pin actors to bundles itself.

Checkpoints: the Trainer writes its own (DeepSpeed state, HF weights) in the trial's run
directory; what a trial reports to Tune is a tiny pointer checkpoint (step + run
directory), so Tune never copies model weights. On ``Tuner.restore`` an unfinished trial
finds its run directory and resumes the Trainer from its latest checkpoint.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from softverify.config import ConfigError, TrainConfig
from softverify.platform.sweep.spec import Sweep, missing_metric_error, parse_sweep

TUNE_DIRNAME = "tune"
SPEC_FILENAME = "sweep_spec.json"


def trial_resources(cfg: TrainConfig, driver_cpus: float) -> list[dict[str, float]]:
    """Placement-group bundles for one trial: [driver, all actors]."""
    from softverify.platform.train.bootstrap import required_resources

    need = required_resources(cfg)
    actors = {"CPU": float(need["CPU"])}
    actors.update({k: float(v) for k, v in need.items() if k != "CPU" and v})  # GPU, custom resources
    return [{"CPU": float(driver_cpus)}, actors]


def check_trial_placement(sweep: Sweep) -> None:
    """Before Tune starts: every representative trial's actor bundle must fit on one node
    of the cluster Ray is connected to (a bundle never spans nodes, so roles pinned by
    custom resources to different nodes cannot share a trial's bundle), and node label
    selectors are refused (a trial's actors run inside its placement group, whose bundle
    the selectors of several roles would have to share)."""
    import ray

    from softverify.infra.placement import RoleRequest, check_placement

    driver_cpus = sweep.spec.tune.resources.driver_cpus
    for params in sweep.representative_params() or [{}]:
        cfg = sweep.trial_config(params, "unused")
        labelled = [k for k, v in (("base.rollout.placement.node_labels", cfg.rollout.placement.node_labels),
                                   ("base.learner.placement.node_labels", cfg.learner.placement.node_labels),
                                   *((f"verifiers[{i}].placement.node_labels", s.placement.node_labels)
                                     for i, s in enumerate(cfg.verifiers))) if v]
        if labelled:
            raise ConfigError(f"{', '.join(labelled)}: node label selectors are not supported in sweeps (a trial's "
                              "actors share one placement bundle); pin roles with custom resources "
                              "(each role's placement.resources) instead")
        driver, actors = trial_resources(cfg, driver_cpus)
        keys = {k: f"one trial's actors together ({k}, see trial_resources)" for k in actors}
        check_placement([RoleRequest("a sweep trial's driver", 1, driver, {}, {"CPU": "tune.resources.driver_cpus"}),
                         RoleRequest("a sweep trial's actors (one placement bundle, on one node)", 1, actors, {},
                                     keys)], ray.nodes())


def _pg_for(config: dict[str, Any], raw_spec: dict[str, Any]):
    from ray import tune

    sweep = _sweep_from(raw_spec)
    cfg = sweep.trial_config(config, "unused")
    return tune.PlacementGroupFactory(trial_resources(cfg, sweep.spec.tune.resources.driver_cpus), strategy="PACK")


@functools.lru_cache(maxsize=4)
def _cached_sweep(raw_json: str) -> Sweep:
    return parse_sweep(json.loads(raw_json))


def _sweep_from(raw_spec: dict[str, Any]) -> Sweep:
    return _cached_sweep(json.dumps(raw_spec, sort_keys=True))


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """Tune wants plain numbers; drop None/NaN-free text and keep ints/floats."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}


def run_trial(config: dict[str, Any], raw_spec: dict[str, Any]) -> None:
    """One Tune trial: a short GRPO training that reports each step (or each eval step)."""
    from ray import tune

    from softverify.platform.train import checkpoint as ckpt
    from softverify.platform.train.trainer import Trainer

    sweep = _sweep_from(raw_spec)
    trial_id = tune.get_context().get_trial_id()
    run_dir = Path(sweep.spec.output_dir) / "trials" / trial_id
    cfg = sweep.trial_config(config, run_dir)
    if sweep.uses_eval and not cfg.trainer.eval_every:
        cfg = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"eval_every": 1})})
    every = cfg.trainer.eval_every if sweep.uses_eval else 1
    resume = ckpt.latest(run_dir / "checkpoints") is not None

    def report(step: int, metrics: dict[str, Any]) -> None:
        if step % every and step != cfg.trainer.steps:
            return
        out = _numeric(metrics)
        out["step"] = step
        if sweep.spec.tune.metric not in out:  # clear, and this trial's alone (Tune's check ends the sweep)
            raise missing_metric_error(sweep.spec.tune.metric, step, out)
        if cfg.trainer.checkpoint_every and step % cfg.trainer.checkpoint_every == 0:
            with tempfile.TemporaryDirectory() as d:
                Path(d, "pointer.json").write_text(json.dumps({"run_dir": str(run_dir), "step": step}))
                tune.report(out, checkpoint=tune.Checkpoint.from_directory(d))
            return
        tune.report(out)

    trainer = Trainer(cfg, resume=resume, on_step=report)
    try:
        trainer.fit()
    finally:
        # ASHA stops a trial by raising SystemExit inside tune.report: the trainer's actors
        # must not outlive the trial (they are owned by this process, but be explicit).
        trainer.shutdown()


def make_trainable(raw_spec: dict[str, Any]):
    from ray import tune

    fn = tune.with_parameters(run_trial, raw_spec=raw_spec)
    return tune.with_resources(fn, functools.partial(_pg_for, raw_spec=raw_spec))


def _scheduler(sweep: Sweep):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    t = sweep.spec.tune
    if t.scheduler == "fifo":
        return FIFOScheduler()
    steps = sweep.trial_config({}, "unused").trainer.steps
    # max_t one past the last step: at max_t ASHA *stops* a trial, which would cut the
    # trainer off before it saves its final model; finished trials should end on their own.
    return ASHAScheduler(time_attr="step", max_t=steps + 1, grace_period=t.asha.grace_period,
                         reduction_factor=t.asha.reduction_factor, brackets=t.asha.brackets)


def _search_alg(sweep: Sweep):
    t = sweep.spec.tune
    if t.search_alg == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
            import optuna  # noqa: F401
        except ImportError:
            raise ConfigError("tune.search_alg=optuna needs the optuna package (pip install optuna)") from None
        return OptunaSearch(seed=t.seed)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=t.seed, max_concurrent=t.max_concurrent_trials)


def ensure_ray(sweep: Sweep) -> None:
    """Attach to a running Ray (or ``trainer.ray_address`` / RAY_ADDRESS), else start a local
    one advertising this machine's usable cores (:func:`softverify.infra.cluster.usable_cpus`),
    running as many trials at once as fit (at most ``max_concurrent_trials``)."""
    import ray

    if ray.is_initialized():
        check_trial_placement(sweep)
        return
    from softverify.infra.cluster import connect

    # the base's own trainer.ray_address (trial configs clear it: trials join the sweep's Ray)
    address = (sweep.base_raw or {}).get("trainer", {}).get("ray_address") or os.environ.get("RAY_ADDRESS")
    if address:
        connect(address)
        check_trial_placement(sweep)
        return
    from softverify.infra.cluster import usable_cpus

    cpus = usable_cpus()  # affinity and cgroup quota, not os.cpu_count()'s host cores
    print(local_ray_plan(trial_cpus(sweep), cpus, sweep.spec.tune.max_concurrent_trials),
          file=sys.stderr, flush=True)
    connect(None, num_cpus=cpus)  # advertising more than the cores would oversubscribe them
    check_trial_placement(sweep)


def trial_cpus(sweep: Sweep) -> float:
    """The most CPUs one trial reserves (driver + actors) over the representative trials."""
    return max(sum(b.get("CPU", 0) for b in trial_resources(sweep.trial_config(p, "unused"),
                                                           sweep.spec.tune.resources.driver_cpus))
               for p in sweep.representative_params() or [{}])


def local_ray_plan(per_trial: float, cpus: int, wanted: int) -> str:
    """The line a local sweep prints before it starts Ray: the CPUs it advertises (the
    machine's usable cores) and how many trials fit at once; refuses a trial that cannot fit."""
    fits = concurrent_trials(per_trial, cpus, wanted)
    cut = f", not tune.max_concurrent_trials={wanted}" if fits < wanted else ""
    return (f"softverify sweep: local Ray with {cpus} CPUs (this machine's usable cores), "
            f"{per_trial:g} reserved per trial: {fits} trial(s) at once{cut}")


def concurrent_trials(per_trial: float, cpus: int, wanted: int) -> int:
    """How many trials reserving ``per_trial`` CPUs run at once on a local Ray of ``cpus``
    real CPUs (at most ``wanted``); a trial that cannot fit at all is refused, naming the keys."""
    if per_trial > cpus + 1e-9:
        raise ConfigError(f"one trial reserves {per_trial:g} CPUs but this machine has {cpus}; lower "
                          "base.rollout.placement.num_cpus, base.learner.placement.num_cpus, a verifier's "
                          "placement.num_cpus or tune.resources.driver_cpus (or point trainer.ray_address at a "
                          "larger cluster)")
    return max(1, min(wanted, int(cpus // per_trial + 1e-9)))


def trial_line(trial_id: str, status: str, result: dict[str, Any] | None, metric: str) -> str:
    """The one line a quiet sweep prints as a trial ends: its status, steps run and the
    ranking metric (with its interval where the trial logged one)."""
    r = result or {}
    steps = r.get("step", r.get("training_iteration"))
    v = r.get(metric)
    what = f"{metric} n/a"
    if isinstance(v, (int, float)):
        lo, hi = r.get(metric + "_lo"), r.get(metric + "_hi")
        what = f"{metric} {v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if isinstance(lo, (int, float))
                                      and isinstance(hi, (int, float)) else "")
    return f"softverify sweep: trial {trial_id} {status}" + (f" after {steps} steps" if steps is not None else "") \
        + f": {what}"


def _trial_lines(metric: str):
    """A Tune callback printing :func:`trial_line` for each trial that ends: what a quiet
    sweep shows instead of Tune's status and per-result tables (``--verbose`` keeps those)."""
    from ray import tune

    class TrialLines(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            print(trial_line(trial.trial_id, "finished", trial.last_result, metric), file=sys.stderr, flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(trial_line(trial.trial_id, "failed", trial.last_result, metric) + " (its error is in results.csv)",
                  file=sys.stderr, flush=True)

    return TrialLines()


def build_tuner(sweep: Sweep, raw_spec: dict[str, Any]):
    from ray import tune

    from softverify.infra import quiet

    from softverify.platform.sweep.spec import param_space

    t = sweep.spec.tune
    out = Path(sweep.spec.output_dir)
    return tune.Tuner(
        make_trainable(raw_spec),
        param_space=param_space(sweep),
        tune_config=tune.TuneConfig(
            metric=t.metric, mode=t.mode, num_samples=t.num_samples, scheduler=_scheduler(sweep),
            search_alg=_search_alg(sweep),
            # the variant generator limits concurrency itself; Tune wraps a Searcher (Optuna)
            max_concurrent_trials=t.max_concurrent_trials if t.search_alg == "optuna" else None,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIRNAME, storage_path=str(out),
            failure_config=tune.FailureConfig(max_failures=t.max_failures, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),  # pointers: a few bytes each
            # quiet (the CLI's default): a line per finished trial instead of Tune's tables
            verbose=0 if quiet.enabled() else 1, callbacks=[_trial_lines(t.metric)] if quiet.enabled() else None,
        ),
    )


def run_sweep(sweep: Sweep, resume: bool = False, restart_errored: bool = False, resume_errored: bool = False):
    """Run (or, with ``resume``, restore and finish) a sweep; write its report. Returns the
    :class:`~ray.tune.ResultGrid`. A failing trial -- its code raising, or its process killed
    by Ray's memory monitor (:mod:`~softverify.platform.sweep.killed_trials`) -- is in the
    results as ERROR with its reason, not raised. On ``resume``, failed trials stay failed
    unless ``restart_errored`` (from scratch) or ``resume_errored`` (from their last
    checkpoint: what a trial cut off by a lost node needs; its trainer resumes exactly)."""
    from ray import tune

    from softverify.platform.sweep.killed_trials import tolerate_killed_trials
    from softverify.platform.sweep.report import write_report

    tolerate_killed_trials()  # an OOM-killed trial is one ERROR row, not the sweep's end
    out = Path(sweep.spec.output_dir)
    exp = out / TUNE_DIRNAME
    spec_file = out / SPEC_FILENAME
    raw_spec = sweep.spec.model_dump()
    raw_spec["base"], raw_spec["base_config"] = sweep.base_raw, None  # self-contained for the trials
    if resume:
        if not tune.Tuner.can_restore(str(exp)):
            raise ConfigError(f"--resume: no Tune experiment to restore under {str(exp)!r}")
        if spec_file.is_file():
            saved = json.loads(spec_file.read_text())
            if saved != json.loads(json.dumps(raw_spec)):
                raise ConfigError(f"--resume: the sweep file differs from the one that started {str(out)!r} "
                                  f"(saved in {SPEC_FILENAME}); restore with the same file and overrides")
        ensure_ray(sweep)
        tuner = tune.Tuner.restore(str(exp), trainable=make_trainable(raw_spec), resume_unfinished=True,
                                   resume_errored=resume_errored, restart_errored=restart_errored)
    else:
        if exp.exists():
            raise ConfigError(f"output_dir {str(out)!r} already holds a sweep; pass --resume to continue it "
                              f"or choose another output_dir")
        out.mkdir(parents=True, exist_ok=True)
        from softverify.platform.train.checkpoint import write_text_atomic

        write_text_atomic(spec_file, json.dumps(raw_spec, indent=1, sort_keys=True))
        ensure_ray(sweep)
        tuner = build_tuner(sweep, raw_spec)
    results = tuner.fit()
    write_report(sweep, results)
    return results
