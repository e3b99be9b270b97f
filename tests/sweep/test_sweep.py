"""Ray Tune sweeps: spec validation, search-space translation, and real sweeps on a local
Ray cluster with a tiny random model and the real PerturbQA data."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml

from softverify.config import ConfigError, load_config
from softverify.platform.sweep.spec import VERIFIER_SET_KEY, load_sweep, param_space, parse_sweep
from softverify.platform.sweep.run import run_sweep, trial_resources


REPO = Path(__file__).resolve().parents[2]
TUNE_CONFIGS = REPO / "tune_configs"
PERTURBQA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "perturbqa"

BASE = {
    "data": {"source": "perturbqa", "max_prompts": 32, "eval_size": 8, "eval_genes": None},
    "rollout": {"num_workers": 1, "prompts_per_step": 2, "group_size": 4, "max_new_tokens": 8, "stop": []},
    "learner": {"num_ranks": 1, "micro_batch_size": 8},
    "algorithm": {"estimator": "sample"},  # sampled groups: rollout.group_size is what the cross-field rules use
    "verifiers": [{"kind": "hard"}, {"kind": "format", "weight": 0.5}],
    "trainer": {"steps": 2, "eval_every": 1},
}


def spec(search, **extra):
    return {"base": copy.deepcopy(BASE), "search": search, **extra}


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize("search, extra, message", [
    ({"verifier_sets": {"x": [{"kind": "nope"}]}}, {}, "search.verifier_sets.x[0]: unknown verifier kind 'nope'"),
    ({}, {}, "empty search space"),
    ({"learner.lr": {"choice": []}}, {}, "search.learner.lr: choice needs a non-empty list"),
    ({"verifier_sets": {}}, {}, "empty search space"),
    ({"learner.lr": {"uniform": [1e-3, 1e-5]}}, {}, "search.learner.lr: uniform range [0.001, 1e-05] is empty or reversed"),
    ({"learner.lr": {"loguniform": [0, 1e-3]}}, {}, "search.learner.lr: loguniform needs low > 0"),
    ({"rollout.group_size": {"randint": [2.5, 8]}}, {}, "search.rollout.group_size: randint needs integers"),
    ({"learner.lr": {"normal": [0, 1]}}, {}, "unknown distribution 'normal'"),
    ({"learner.lr": 1e-3}, {}, "search.learner.lr: expected one distribution"),
    ({"learner.lrr": {"choice": [1e-3]}}, {}, "search.learner.lrr: unknown config key 'learner.lrr'"),
    ({"learner": {"choice": [1]}}, {}, "search.learner: is a whole section"),
    ({"verifiers.soft.weight": {"uniform": [0, 1]}}, {}, "search.verifiers.soft.weight: no verifier named 'soft'"),
    ({"verifiers.hard.colour": {"choice": [1]}}, {}, "search.verifiers.hard.colour: unknown verifier field 'colour'"),
    # placement keys that moved into each role's placement section name their new place
    ({"rollout.num_cpus_per_worker": {"choice": [1]}}, {},
     "search.rollout.num_cpus_per_worker moved to search.rollout.placement.num_cpus"),
    ({"verifiers.hard.num_gpus": {"choice": [0]}}, {},
     "search.verifiers.hard.num_gpus moved to search.verifiers.hard.placement.num_gpus"),
    ({"verifier_sets": {"x": [{"kind": "hard", "num_cpus": 0.5}]}}, {},
     "search.verifier_sets.x[0]: num_cpus moved to placement.num_cpus"),
    ({"verifiers.hard.placement.cpus": {"choice": [1]}}, {},
     "search.verifiers.hard.placement.cpus: unknown placement field 'cpus'"),
    ({"data.seed": {"choice": [0, 1]}}, {}, "search.data.seed: changes the held-out eval questions"),
    ({"trainer.output_dir": {"choice": ["a"]}}, {}, "set per trial by the sweep"),
    # ranges whose ends are invalid TrainConfig values fail before Tune, naming the key
    ({"verifiers.hard.threshold": {"uniform": [0.2, 1.5]}}, {}, "search.verifiers.hard.threshold = 1.5"),
    ({"rollout.group_size": {"choice": [1, 4]}}, {}, "search.rollout.group_size = 1"),
    ({"reward.aggregation": {"choice": ["sum", "sum_then_normalize"]}}, {}, "search.reward.aggregation = 'sum'"),
    ({"learner.lr": {"uniform": [1e-4, 1e-3]}}, {"tune": {"search_alg": "grid"}}, "search_alg=grid needs finite spaces"),
    ({"learner.lr": {"choice": [1e-3]}}, {"tune": {"metrik": "x"}}, "tune.metrik: unknown key"),
    ({"learner.lr": {"choice": [1e-3]}}, {"schedule": "asha"}, "schedule: unknown key"),
    ({"learner.lr": {"choice": [1e-3]}}, {"tune": {"asha": {"grace_period": 5}}}, "grace_period (5) exceeds trainer.steps (2)"),
    ({"learner.lr": {"choice": [1e-3]}}, {"tune": {"metric": "eval/auc"}},
     "tune.metric='eval/auc': periodic eval logs no such metric (did you mean eval_forced/auroc"),
])
def test_invalid_sweeps_fail_with_the_key(search, extra, message):
    with pytest.raises(ConfigError) as e:
        parse_sweep(spec(search, **extra))
    assert message in str(e.value), str(e.value)


def test_invalid_base_and_combinations():
    bad = spec({"learner.lr": {"choice": [1e-3]}})
    bad["base"]["verifiers"] = [{"kind": "nope"}]
    with pytest.raises(ConfigError, match="(?s)base config: .*unknown verifier kind 'nope'"):
        parse_sweep(bad)
    # each value is valid alone; only the combination breaks a cross-field rule
    s = spec({"rollout.prompts_per_step": {"choice": [2, 1]}, "learner.num_ranks": {"choice": [1, 8]}})
    s["base"]["rollout"]["group_size"] = 4
    with pytest.raises(ConfigError, match=r"(?s)the combination .*cannot be split over learner.num_ranks = 8"):
        parse_sweep(s)


def test_set_values_are_typed_for_the_base_and_the_spec():
    """``--set base.<TrainConfig key>`` reads the value for TrainConfig's field type and the
    sweep's own keys for SweepSpec's (#18 item 9): text fields keep text YAML would turn
    into a bool, a mapping or a number."""
    sweep = load_sweep(TUNE_CONFIGS / "smoke_cpu.yaml", [
        "base.rollout.system_prompt=yes", "base.rollout.assistant_prefix=Answer:", "name=123", "tune.num_samples=2"])
    assert sweep.base_raw["rollout"]["system_prompt"] == "yes"
    assert sweep.base_raw["rollout"]["assistant_prefix"] == "Answer:"
    assert (sweep.spec.name, sweep.spec.tune.num_samples) == ("123", 2)


@pytest.mark.parametrize("path", sorted(TUNE_CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweep_configs_validate(path):
    sweep = load_sweep(path)
    assert sweep.dists or sweep.verifier_sets
    assert len(list(TUNE_CONFIGS.glob("*.yaml"))) >= 3


# ---------------------------------------------------------------------------- translation


def test_param_space_translation():
    from ray.tune.search.sample import Categorical, Float, Integer

    s = parse_sweep(spec({
        "verifier_sets": {"h": [{"kind": "hard"}], "hf": [{"kind": "hard", "weight": 2}, {"kind": "format"}]},
        "learner.lr": {"loguniform": [1e-5, 1e-3]},
        "verifiers.format.threshold": {"uniform": [0.2, 0.8]},
        "rollout.group_size": {"randint": [2, 9]},
        "reward.aggregation": {"choice": ["sum_then_normalize", "normalize_then_sum"]},
        "algorithm.kl_coef": {"grid": [0.0, 0.01]},
    }))
    space = param_space(s)
    assert isinstance(space[VERIFIER_SET_KEY], Categorical) and space[VERIFIER_SET_KEY].categories == ["h", "hf"]
    lr = space["learner.lr"]
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-5, 1e-3) and "LogUniform" in type(lr.sampler).__name__
    assert isinstance(space["verifiers.format.threshold"], Float)
    gs = space["rollout.group_size"]
    assert isinstance(gs, Integer) and (gs.lower, gs.upper) == (2, 9)
    assert space["reward.aggregation"].categories == ["sum_then_normalize", "normalize_then_sum"]
    assert space["algorithm.kl_coef"] == {"grid_search": [0.0, 0.01]}

    # a trial's config: its verifier set, per-name weights/thresholds, searched fields
    cfg = s.trial_config({VERIFIER_SET_KEY: "hf", "verifiers.format.threshold": 0.3, "learner.lr": 2e-4,
                          "rollout.group_size": 3, "algorithm.kl_coef": 0.01}, "/tmp/x")
    assert [(v.kind, v.weight, v.threshold) for v in cfg.verifiers] == [("hard", 2.0, None), ("format", 1.0, 0.3)]
    assert (cfg.learner.lr, cfg.rollout.group_size, cfg.algorithm.kl_coef) == (2e-4, 3, 0.01)
    assert cfg.trainer.output_dir == "/tmp/x" and cfg.trainer.progress is False
    # a set without 'format' ignores the format threshold
    cfg = s.trial_config({VERIFIER_SET_KEY: "h", "verifiers.format.threshold": 0.3}, "/tmp/x")
    assert [v.kind for v in cfg.verifiers] == ["hard"]
    # the base is never mutated by trials
    assert s.base_raw["verifiers"] == BASE["verifiers"]

    # grid search turns every choice (and the verifier sets) into grid axes
    g = parse_sweep(spec({"verifier_sets": {"h": [{"kind": "hard"}]}, "learner.lr": {"choice": [1e-3, 1e-4]}},
                         tune={"search_alg": "grid"}))
    assert param_space(g) == {VERIFIER_SET_KEY: {"grid_search": ["h"]}, "learner.lr": {"grid_search": [1e-3, 1e-4]}}
    v = parse_sweep(spec({"verifier_sets": {"grid": {"a": [{"kind": "hard"}], "b": [{"kind": "format"}]}}}))
    assert param_space(v) == {VERIFIER_SET_KEY: {"grid_search": ["a", "b"]}}


def test_verifier_values_apply_to_default_verifiers():
    raw = spec({"verifiers.format.weight": {"choice": [0.25]}})
    del raw["base"]["verifiers"]
    cfg = parse_sweep(raw).trial_config({"verifiers.format.weight": 0.25}, "/tmp/x")
    assert [(v.kind, v.weight) for v in cfg.verifiers] == [("hard", 1.0), ("format", 0.25)]


def test_a_verifiers_placement_field_is_searched_one_level_down():
    raw = spec({"verifiers.format.placement.num_cpus": {"choice": [0.25]}})
    cfg = parse_sweep(raw).trial_config({"verifiers.format.placement.num_cpus": 0.25}, "/tmp/x")
    assert [v.placement.num_cpus for v in cfg.verifiers] == [0.0, 0.25]


def test_error_line_names_the_exception():
    from softverify.platform.sweep.report import error_line

    oom = RuntimeError("ray::ImplicitFunc.train() (pid=1)\n  File \"x.py\", line 3\n"
                       "ray.exceptions.OutOfMemoryError: 5 worker(s) were killed due to the node running low on memory.\n"
                       "Refer to the documentation on how to address the out of memory issue: https://docs.ray.io/...")
    assert error_line(oom).startswith("ray.exceptions.OutOfMemoryError: 5 worker(s) were killed")
    assert error_line(FileNotFoundError("model path '/x' does not exist")) == "model path '/x' does not exist"


def test_reward_metric_refused_when_trials_have_different_rewards():
    with pytest.raises(ConfigError, match="search.verifier_sets give trials different reward functions"):
        parse_sweep(spec({"verifier_sets": {"a": [{"kind": "hard"}], "b": [{"kind": "format"}]}},
                         tune={"metric": "reward_mean"}))
    with pytest.raises(ConfigError, match=r"search.verifiers.hard.weight .*rank by a held-out eval metric"):
        parse_sweep(spec({"verifiers.hard.weight": {"uniform": [0.5, 1.0]}}, tune={"metric": "reward_mean"}))
    # the same reward function in every trial: the reward is a fair ranking
    assert parse_sweep(spec({"learner.lr": {"choice": [1e-4, 1e-3]}}, tune={"metric": "reward_mean"}))


def test_default_metric_is_the_forced_auroc_reported_at_eval_steps():
    """The default ranking metric is held-out (comparable across reward functions); a forced
    eval metric is an eval metric: trials report it at eval steps, which must divide the steps."""
    from softverify.platform.sweep.spec import missing_metric_error

    s = parse_sweep(spec({"verifier_sets": {"a": [{"kind": "hard"}], "b": [{"kind": "format"}]}}))
    assert s.spec.tune.metric == "eval_forced/auroc" and s.uses_eval
    raw = spec({"learner.lr": {"choice": [1e-3]}})
    raw["base"]["trainer"].update(steps=3, eval_every=2)
    with pytest.raises(ConfigError, match=r"tune.metric='eval_forced/auroc' is reported at eval steps: "
                                          r"trainer.steps \(3\) must be a multiple of trainer.eval_every \(2\)"):
        parse_sweep(raw)
    # a trial whose report lacks the metric fails on its own, naming it and the near names
    err = missing_metric_error("eval_forced/aurocc", 2, {"eval_forced/auroc": 0.6, "reward_mean": 0.1, "step": 2})
    assert str(err) == ("tune.metric='eval_forced/aurocc' is not among the 3 metrics this trial logs at step 2 "
                        "(closest: eval_forced/auroc); set tune.metric to a key of the trial's metrics.jsonl")


def _result(tid: str, config: dict, metric: list[float], out: Path, error: Exception | None = None):
    """A real Tune Result as Tune builds it for a finished trial (config, history, path)."""
    from ray.tune import Result

    df = pd.DataFrame({"step": range(1, len(metric) + 1), "eval_forced/auroc": metric,
                       "reward_mean": [0.3] * len(metric)})
    return Result(metrics={"trial_id": tid, "config": config, **df.iloc[-1].to_dict()} if metric else
                  {"trial_id": tid, "config": config}, checkpoint=None, error=error,
                  path=str(out / "tune" / f"trial_{tid}"), metrics_dataframe=df if metric else None)


def test_report_blanks_unused_values_ranks_by_the_metric_and_names_trials(tmp_path):
    """results.csv leaves a sampled weight empty where the trial's set lacks its verifier,
    best_config.yaml is the trial with the best final metric (its header lists only the
    values it used), and sweep.png names each line and bar by verifier set and values."""
    from softverify.platform.sweep.report import best_config_yaml, best_trial, sweep_figure, trial_id, write_report

    s = parse_sweep(spec({"verifier_sets": {"hard": [{"kind": "hard"}],
                                            "hard+length": [{"kind": "hard"}, {"kind": "length"}]},
                          "verifiers.length.weight": {"uniform": [0.5, 2.0]}}, output_dir=str(tmp_path)))
    results = [
        _result("t_00000", {VERIFIER_SET_KEY: "hard", "verifiers.length.weight": 1.7}, [0.5, 0.9], tmp_path),
        _result("t_00001", {VERIFIER_SET_KEY: "hard+length", "verifiers.length.weight": 0.6}, [0.5, 0.7], tmp_path),
        _result("t_00002", {VERIFIER_SET_KEY: "hard+length", "verifiers.length.weight": 1.2}, [], tmp_path,
                error=RuntimeError("ValueError: boom")),
    ]
    paths = write_report(s, results)
    table = pd.read_csv(paths["csv"])
    assert list(table["trial_id"]) == ["t_00000", "t_00001", "t_00002"]  # best final eval_forced/auroc first
    assert list(table["status"]) == ["COMPLETED", "COMPLETED", "ERROR"]
    w = table.set_index("trial_id")["config/verifiers.length.weight"]
    assert pd.isna(w["t_00000"]) and w["t_00001"] == 0.6 and w["t_00002"] == 1.2
    assert pd.read_parquet(paths["parquet"])["config/verifiers.length.weight"].isna().tolist() == [True, False, False]
    best = best_trial(s, results)
    assert trial_id(best) == "t_00000"
    header = paths["best_config"].read_text().splitlines()[0]
    assert header == ("# best trial of sweep 'sweep' by final eval_forced/auroc (max); "
                      "searched values: {'verifier_set': 'hard'}")
    assert best_config_yaml(s, best).splitlines()[0] == header
    fig = sweep_figure(s, results, table)
    lines, bars = fig.axes[0], fig.axes[2]
    assert [t.get_text() for t in lines.get_legend().get_texts()] == ["hard (00000)",
                                                                      "hard+length length.weight=0.6 (00001)"]
    assert [t.get_text() for t in bars.get_xticklabels()] == ["hard", "hard+length"]
    assert fig.axes[1].get_title() == "reward_mean per trial (each trial's own reward)"
    fig.canvas.draw()
    assert all(float(x).is_integer() for x in lines.get_xticks())

    # no verifier sets: one bar per trial, named like the legend
    s2 = parse_sweep(spec({"learner.lr": {"choice": [1e-4, 1e-3]}}, output_dir=str(tmp_path / "lr")))
    r2 = [_result("u_00000", {"learner.lr": 1e-4}, [0.6], tmp_path), _result("u_00001", {"learner.lr": 1e-3}, [0.8], tmp_path)]
    fig = sweep_figure(s2, r2, pd.DataFrame({"trial_id": ["u_00001", "u_00000"], "status": ["COMPLETED"] * 2,
                                             "final/eval_forced/auroc": [0.8, 0.6]}))
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == ["lr=0.001 (00001)", "lr=0.0001 (00000)"]
    assert fig.axes[2].get_title() == "final eval_forced/auroc by trial"


def test_no_best_config_when_no_trial_reported_the_metric(tmp_path, capsys):
    """Every trial failed: no best_config.yaml (an older one is removed), and the reason is given."""
    from softverify.platform.sweep.report import no_best_reason, write_report

    s = parse_sweep(spec({"learner.lr": {"choice": [1e-4]}}, output_dir=str(tmp_path)))
    (tmp_path / "best_config.yaml").write_text("# stale\n")
    paths = write_report(s, [_result("v_00000", {"learner.lr": 1e-4}, [], tmp_path, error=RuntimeError("x"))])
    assert "best_config" not in paths and not (tmp_path / "best_config.yaml").exists()
    table = pd.read_csv(paths["csv"])
    assert no_best_reason(s, table) == "every trial failed (see the 'error' column of results.csv)"
    table.loc[0, "status"] = "STOPPED"
    assert no_best_reason(s, table) == ("no trial reported tune.metric='eval_forced/auroc' "
                                        "(it is logged at eval steps: trainer.eval_every)")


def test_unused_verifier_values_and_trial_labels():
    from softverify.platform.sweep.report import trial_label

    s = parse_sweep(spec({"verifier_sets": {"h": [{"kind": "hard"}], "hl": [{"kind": "hard"}, {"kind": "length"}]},
                          "verifiers.length.weight": {"uniform": [0.5, 2.0]}, "learner.lr": {"choice": [1e-4]}}))
    used = {VERIFIER_SET_KEY: "hl", "verifiers.length.weight": 1.23456, "learner.lr": 1e-4}
    assert s.unused_params(used) == set()
    assert s.unused_params({**used, VERIFIER_SET_KEY: "h"}) == {"verifiers.length.weight"}
    assert trial_label(s, used, "abc_00001") == "hl length.weight=1.23 lr=0.0001 (00001)"
    assert trial_label(s, {**used, VERIFIER_SET_KEY: "h"}, "abc_00002") == "h lr=0.0001 (00002)"


def test_local_sweep_uses_the_real_cpus():
    import os

    from softverify.infra.cluster import cgroup_cpu_limit, usable_cpus
    from softverify.platform.sweep.run import concurrent_trials, local_ray_plan

    # a container's quota caps the cores os.cpu_count() reports for the host
    assert cgroup_cpu_limit(cpu_max="200000 100000\n") == 2.0
    assert cgroup_cpu_limit(cpu_max="max 100000\n") is None
    assert cgroup_cpu_limit(cfs_quota="150000\n", cfs_period="100000\n") == 1.5
    assert cgroup_cpu_limit(cfs_quota="-1\n", cfs_period="100000\n") is None
    assert cgroup_cpu_limit() is None and cgroup_cpu_limit(cpu_max="garbage") is None
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
    assert local_ray_plan(1.0, 2, 2) == ("softverify sweep: local Ray with 2 CPUs (this machine's usable cores), "
                                         "1 reserved per trial: 2 trial(s) at once")
    assert local_ray_plan(1.5, 2, 2).endswith("1 trial(s) at once, not tune.max_concurrent_trials=2")
    assert concurrent_trials(1.0, 2, 2) == 2
    assert concurrent_trials(1.5, 2, 2) == 1  # fewer at once, not more logical CPUs than cores
    assert concurrent_trials(0.5, 16, 3) == 3
    with pytest.raises(ConfigError, match="one trial reserves 2.5 CPUs but this machine has 2; lower"):
        concurrent_trials(2.5, 2, 1)


def test_trial_resources_cover_the_trainers_actors():
    s = parse_sweep(spec({"verifier_sets": {"h": [{"kind": "hard", "placement": {"num_cpus": 0.5}}],
                                            "hfl": [{"kind": "hard"}, {"kind": "format"}, {"kind": "length"}]}}))
    one = trial_resources(s.trial_config({VERIFIER_SET_KEY: "h"}, "x"), 0.5)
    three = trial_resources(s.trial_config({VERIFIER_SET_KEY: "hfl"}, "x"), 0.5)
    # driver bundle, then one bundle: 1 worker * 0.5 + 1 rank * 0.5 + verifiers (default: 0 CPUs each)
    assert one == [{"CPU": 0.5}, {"CPU": 1.5}]
    assert three == [{"CPU": 0.5}, {"CPU": 1.0}]


# ---------------------------------------------------------------------------- real sweeps


@pytest.fixture(scope="module")
def ray_cluster(tiny_model_dir):
    """The local Ray `softverify sweep` starts for the smoke sweep (2 trials of 1 CPU each):
    it advertises the machine's usable cores, no more."""
    from softverify.infra.cluster import usable_cpus
    from softverify.platform.sweep.run import ensure_ray

    if ray.is_initialized():
        ray.shutdown()
    ensure_ray(load_sweep(TUNE_CONFIGS / "smoke_cpu.yaml", [
        f"base.model.path={tiny_model_dir}", f"base.data.mirror={PERTURBQA.resolve()}"]))
    assert ray.cluster_resources()["CPU"] == usable_cpus()
    yield
    ray.shutdown()


def _wait_all_released(timeout=90.0):
    """Every trial's placement group and actors gone: all logical CPUs free again."""
    total = ray.cluster_resources()["CPU"]
    end = time.time() + timeout
    while time.time() < end:
        if abs(ray.available_resources().get("CPU", 0.0) - total) < 1e-6:
            return
        time.sleep(0.5)
    raise AssertionError(f"resources not released: {ray.available_resources()} of {ray.cluster_resources()}")


@pytest.mark.timeout(1200)  # ~1 min on 2 idle cores (4 trials: 129 s); ~9 min measured with load average 40
def test_smoke_sweep_end_to_end_then_restore(ray_cluster, tiny_model_dir, tmp_path):
    assert PERTURBQA.is_dir(), f"real PerturbQA data expected at {PERTURBQA}"
    out = tmp_path / "smoke"
    # the shipped file with one sample per verifier set (2 trials, run at once): what the suite can afford
    smoke = [f"base.model.path={tiny_model_dir}", f"base.data.mirror={PERTURBQA.resolve()}", f"output_dir={out}",
             "tune.num_samples=1"]
    sweep = load_sweep(TUNE_CONFIGS / "smoke_cpu.yaml", smoke)
    assert sweep.spec.tune.scheduler == "asha"
    results = run_sweep(sweep)
    assert len(results) == 2 and not results.errors

    table = pd.read_csv(out / "results.csv")
    assert len(table) == 2 and set(table["status"]) <= {"COMPLETED", "STOPPED"}
    assert (table["status"] == "COMPLETED").any()
    assert sorted(table["config/verifier_set"]) == ["hard_format", "hard_format_length"]
    for col in ("final/reward_mean", "final/eval/mcc", "final/eval/f1", "final/eval/balanced_accuracy",
                "final/eval_forced/auroc", "final/eval_forced/auc_per_gene", "final/eval_forced/auc_per_gene_lo",
                "final/eval_forced/auc_per_gene_hi"):
        assert table[col].notna().all(), col
    # sorted by the sweep metric (the verifier sets differ: a held-out metric, not the reward), best first:
    # by default the per-gene AUROC on whole validation genes
    assert sweep.spec.tune.metric == "eval_forced/auc_per_gene"
    got = list(table["final/eval_forced/auc_per_gene"])
    assert got == sorted(got, reverse=True)
    # the length weight is sampled for every trial but only reported where the set has a length verifier
    no_length = table["config/verifier_set"] == "hard_format"
    assert table.loc[no_length, "config/verifiers.length.weight"].isna().all()
    assert table.loc[~no_length, "config/verifiers.length.weight"].between(0.5, 2.0).all()
    pq = pd.read_parquet(out / "results.parquet")
    assert list(pq["trial_id"]) == list(table["trial_id"].astype(str))
    assert (out / "sweep.png").stat().st_size > 10_000

    # every trial reported each step: the reward curve and the eval metrics
    for res in results:
        hist = res.metrics_dataframe
        n = len(hist)
        assert list(hist["step"]) == list(range(1, n + 1))
        assert hist["reward_mean"].notna().all() and hist["eval/mcc"].notna().all()
        assert (hist["questions_trained"] > 0).all()  # the enumerated direct style trains every question
    done = table[table["status"] == "COMPLETED"]
    assert (done["steps"] == 3).all()
    for tid in done["trial_id"]:  # finished trials end on their own: final model saved
        assert (out / "trials" / str(tid) / "final" / "model.safetensors").is_file()

    # best config: a complete training config that `softverify train --config` accepts
    best = load_config(out / "best_config.yaml")
    top = table.iloc[0]
    assert best.learner.lr == pytest.approx(top["config/learner.lr"])
    names = [v.display_name for v in best.verifiers]
    assert names == (["hard", "format", "length"] if top["config/verifier_set"] == "hard_format_length"
                     else ["hard", "format"])
    assert best.trainer.output_dir == str(out / "best_run") and best.trainer.progress is True

    # no trainer actor outlives its trial, early-stopped ones included
    _wait_all_released()

    # restore of the finished sweep: nothing reruns, the report is rebuilt from Tune's state
    lines = {t: (out / "trials" / str(t) / "metrics.jsonl").read_text() for t in table["trial_id"]}
    (out / "results.csv").unlink()
    again = run_sweep(load_sweep(TUNE_CONFIGS / "smoke_cpu.yaml", smoke), resume=True)
    assert len(again) == 2
    assert pd.read_csv(out / "results.csv").equals(table)
    assert lines == {t: (out / "trials" / str(t) / "metrics.jsonl").read_text() for t in table["trial_id"]}

    # a second run into the same output_dir must not clobber it
    with pytest.raises(ConfigError, match="already holds a sweep; pass --resume"):
        run_sweep(sweep)


@pytest.mark.timeout(1200)
def test_interrupted_sweep_resumes_and_failing_trial_is_reported(ray_cluster, tiny_model_dir, tmp_path):
    """`softverify sweep` is interrupted (SIGINT) while its first trial trains; `--resume`
    (Tuner.restore) finishes it from the trainer's checkpoint, then runs the second trial,
    whose model path does not exist: that trial is reported as ERROR, the sweep completes."""
    import os
    import signal
    import subprocess
    import sys

    from softverify.platform.train import checkpoint as ckpt

    out = tmp_path / "interrupted"
    raw = spec({"model.path": {"grid": [str(tiny_model_dir), "/nonexistent/model"]}},
               output_dir=str(out), tune={"scheduler": "fifo", "metric": "reward_mean", "num_samples": 1,
                                                 "max_concurrent_trials": 1})
    raw["base"]["data"]["mirror"] = str(PERTURBQA.resolve())
    # 8 steps: the SIGINT goes out after the first checkpoint, and a quiet machine ran 3 tiny-model steps before
    # it arrived (the interrupt must land mid-trial)
    raw["base"]["trainer"].update(steps=8, eval_every=0, checkpoint_every=1)
    raw["base"]["verifiers"] = [{"kind": "length", "params": {"max_chars": 200}}]
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump(raw))

    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address, PYTHONUNBUFFERED="1")
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "softverify.cli", "sweep", str(f)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        end = time.time() + 600
        first = None
        while time.time() < end and proc.poll() is None:
            runs = sorted((out / "trials").glob("*")) if (out / "trials").is_dir() else []
            if runs and ckpt.latest(runs[0] / "checkpoints") is not None:
                first = runs[0]
                break
            time.sleep(0.2)
        assert first is not None, (tmp_path / "first.log").read_text()[-3000:]
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == 130, (tmp_path / "first.log").read_text()[-3000:]
    assert "--resume" in (tmp_path / "first.log").read_text()
    partial = pd.read_csv(out / "results.csv")
    assert list(partial["status"]) == ["INTERRUPTED"]
    interrupted_at = ckpt.read_state(ckpt.latest(first / "checkpoints"))["step"]
    assert interrupted_at < 8 and not (first / "final").exists(), "the sweep finished before the interrupt"
    _wait_all_released()

    from softverify.cli import main

    assert main(["sweep", str(f), "--resume"]) == 0
    table = pd.read_csv(out / "results.csv").set_index("config/model.path")
    good, bad = table.loc[str(tiny_model_dir)], table.loc["/nonexistent/model"]
    assert (good["status"], good["steps"]) == ("COMPLETED", 8)
    assert bad["status"] == "ERROR" and "does not exist" in bad["error"]
    # the interrupted trial continued from its checkpoint: one metrics row per step, a final model
    steps = [json.loads(line)["step"] for line in (first / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    assert (first / "final" / "model.safetensors").is_file()
    best = load_config(out / "best_config.yaml")
    assert best.model.path == str(tiny_model_dir)
    # resuming with a different sweep file is refused
    raw["search"]["model.path"] = {"grid": [str(tiny_model_dir)]}
    f.write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(f), "--resume"]) == 2
    _wait_all_released()


def test_per_gene_default_metric_intervals_and_the_separability_note(tmp_path):
    """A base that evaluates whole target genes ranks by PerturbQA's per-gene AUROC by
    default; the table carries its final 95 % interval, and overlapping intervals of the top
    two trials give a 'not separable' line (disjoint ones give none)."""
    from ray.tune import Result

    from softverify.platform.sweep.report import results_table, separability_note

    raw = spec({"learner.lr": {"choice": [1e-4, 1e-3, 1e-2]}}, output_dir=str(tmp_path))
    raw["base"]["data"]["eval_genes"] = 8
    s = parse_sweep(raw)
    assert s.spec.tune.metric == "eval_forced/auc_per_gene" and s.uses_eval
    assert parse_sweep(spec({"learner.lr": {"choice": [1e-3]}})).spec.tune.metric == "eval_forced/auroc"  # no genes

    def result(tid, lr, v, lo, hi):
        m = "eval_forced/auc_per_gene"
        df = pd.DataFrame({"step": [1, 2], m: [0.5, v], f"{m}_lo": [0.4, lo], f"{m}_hi": [0.6, hi],
                           "reward_mean": [0.3, 0.3]})
        return Result(metrics={"trial_id": tid, "config": {"learner.lr": lr}, **df.iloc[-1].to_dict()},
                      checkpoint=None, error=None, path=str(tmp_path / tid), metrics_dataframe=df)

    table = results_table(s, [result("a", 1e-4, 0.55, 0.50, 0.60), result("b", 1e-3, 0.60, 0.56, 0.64),
                              result("c", 1e-2, 0.52, 0.47, 0.57)])
    assert list(table["trial_id"]) == ["b", "a", "c"]
    assert list(table["final/eval_forced/auc_per_gene_lo"]) == [0.56, 0.50, 0.47]
    note = separability_note(s, table)
    assert note.startswith("not separable: the best trial b (eval_forced/auc_per_gene 0.600 [0.560, 0.640]) "
                           "and the next, a (0.550 [0.500, 0.600])"), note
    apart = results_table(s, [result("a", 1e-4, 0.52, 0.50, 0.54), result("b", 1e-3, 0.60, 0.56, 0.64)])
    assert separability_note(s, apart) is None
