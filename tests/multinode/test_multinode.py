"""Real multi-node Ray on loopback: placement by role, weight sync across nodes, node loss.

Two nodes (see conftest.py): the head carries the rollout role, the worker the learner
role. A tiny random model trains through the platform's own Trainer with
``rollout.placement.resources``, ``learner.placement.resources`` and a verifier's
``placement.node_labels``; the actors must land where those keys say (their node ids, as each
actor reports it, in ``placement.json``), and the weights the learner ranks train on the
worker node must reach the rollout workers on the head: with one micro-batch per rank the
importance ratio of every step is exactly 1 only when rollouts came from the learner's
current weights, and after training the workers' logprobs equal the learner's.

Then the learner node is killed (its raylet, object store and workers, by PID) during a
`softverify train` run: the run stops with one line naming the last complete checkpoint;
a new learner node joins and ``--auto-resume`` finishes with weights identical to the
uninterrupted run's.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from safetensors.torch import load_file

from loopback import ray_env
from softverify.config import ConfigError, build_config
from softverify.platform.train import checkpoint as ckpt
from softverify.platform.train.trainer import Trainer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
STEPS = 3
RATIO_TOL = 1e-4
PINNED = ["rollout.placement.resources={rollout_node: 1}", "learner.placement.resources={learner_node: 1}"]
#: the reference and the node-loss runs must score alike to train alike; only the reference
#: pins a verifier (a restartable actor pinned to a node that is gone would wait for it)
VERIFIERS = "[{kind: hard%s}, {kind: format, weight: 0.5}, {kind: length, weight: 1.0, params: {max_chars: 200}}]"


def overrides(model_dir: Path, prompts: Path, out: Path, *extra: str) -> list[str]:
    """2 workers on the rollout node, 2 ranks on the learner node, 8 samples a step, one
    micro-batch per rank (ratio exactly 1 on policy), every weight trains and syncs."""
    return [
        f"model.path={model_dir}", "data.source=file", f"data.path={prompts}", f"trainer.output_dir={out}",
        "rollout.num_workers=2", "rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8",
        "rollout.stop=[]", "rollout.placement.num_cpus=0.5", "learner.num_ranks=2", "learner.placement.num_cpus=0.5",
        "learner.micro_batch_size=4", "learner.lr=1e-2", "trainer.progress=false", f"trainer.steps={STEPS}",
        "trainer.checkpoint_every=1", "trainer.keep_checkpoints=5", "trainer.eval_every=0",
        "algorithm.dynamic_sampling=none", "learner.train_layers=null", "learner.lr_warmup_steps=0",
        "algorithm.estimator=sample", "algorithm.advantage=grpo", "algorithm.entropy_coef=0",
        *PINNED, *extra,
    ]


def node_ids(cluster) -> tuple[str, str]:
    ids = cluster.node_ids()
    # the head and the newest worker: after the node-loss test the first worker is dead and a
    # re-formed one has joined (killed nodes stay in cluster.nodes)
    return ids[cluster.nodes[0].temp_dir], ids[cluster.nodes[-1].temp_dir]


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs between {a} and {b}"


@pytest.fixture(scope="module")
def trained(two_nodes, tiny_model_dir, prompt_file, tmp_path_factory):
    """The uninterrupted run: fit STEPS steps, then compare the workers' logprobs on fresh
    rollouts with the learner's (while the actors are alive); returns what the tests check."""
    out = tmp_path_factory.mktemp("multinode") / "reference"
    verifiers = "verifiers=" + VERIFIERS % ", placement: {node_labels: {role: learner}}"
    tr = Trainer(build_config({}, overrides(tiny_model_dir, prompt_file, out, verifiers)))
    t0 = time.monotonic()
    try:
        tr.fit()
        samples = ray.get(tr.rounds.rollout([0, 1], 7, tr.weights)[0])
        learner_lp = tr.learners.logprobs(samples)
        worker_lp = [ray.get(w.score.remote(samples)) for w in tr.workers]
    finally:
        tr.shutdown()
    return {"out": out, "samples": samples, "learner_lp": learner_lp, "worker_lp": worker_lp,
            "wall_s": time.monotonic() - t0}


def test_roles_land_on_their_nodes_and_weights_sync_across_them(two_nodes, trained, tiny_model_dir):
    head, worker = node_ids(two_nodes)
    assert head != worker
    where = json.loads((trained["out"] / "placement.json").read_text())
    assert where["rollout_workers"] == [head, head]
    assert where["learner_ranks"] == [worker, worker]
    assert where["verifiers"]["hard"] == worker  # placement.node_labels {role: learner}
    rows = [json.loads(l) for l in (trained["out"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    # every step's rollouts (on the head) came from the weights the learner (on the worker) had
    for r in rows:
        assert abs(r["ratio_mean"] - 1) < RATIO_TOL and r["clip_frac"] == 0, r
    # and after the last sync both workers hold exactly the learner's weights
    for per_worker in trained["worker_lp"]:
        for a, b in zip(per_worker, trained["learner_lp"]):
            np.testing.assert_allclose(a, b, atol=1e-4)
    for s, b in zip(trained["samples"], trained["learner_lp"]):
        np.testing.assert_allclose(s.behaviour_logprobs, b, atol=1e-4)
    # the weights did move (lr 1e-2): this is not the initial model agreeing with itself
    final = load_file(str(trained["out"] / "final" / "model.safetensors"))
    init = load_file(str(tiny_model_dir / "model.safetensors"))
    assert any(not torch.equal(final[k], init[k]) for k in init if k in final)
    print(f"multinode train: {STEPS} steps in {trained['wall_s']:.0f} s")


def test_a_request_no_node_can_place_is_refused_naming_role_and_key(two_nodes, tiny_model_dir, prompt_file, tmp_path):
    cfg = build_config({}, overrides(tiny_model_dir, prompt_file, tmp_path / "r",
                                     "learner.placement.resources={learner_node: 3}"))
    with pytest.raises(ConfigError, match=r"impossible resource request: the run needs 6 learner_node in total but "
                                          r"the Ray cluster has 2; lower learner\.placement\.resources\.learner_node "
                                          r"\(2 x 3\)"):
        Trainer(cfg).setup()
    cfg = build_config({}, overrides(tiny_model_dir, prompt_file, tmp_path / "c", "learner.num_ranks=1",
                                     "rollout.placement.resources={}",
                                     "learner.placement.resources={learner_node: 1, rollout_node: 1}"))
    with pytest.raises(ConfigError, match=r"impossible placement for learner ranks: one actor asks \{CPU: 0.5, "
                                          r"learner_node: 1, rollout_node: 1\} but no single node has all of it"):
        Trainer(cfg).setup()
    cfg = build_config({}, overrides(tiny_model_dir, prompt_file, tmp_path / "l",
                                     "rollout.placement.node_labels={role: gpu}"))
    with pytest.raises(ConfigError, match=r"rollout workers: rollout\.placement\.node_labels = \{role: gpu\} "
                                          r"matches no node; "
                                          r"the cluster's nodes have role=learner, role=rollout"):
        Trainer(cfg).setup()


def _train_cli(args: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "softverify.cli", "train"]
    for ov in args:
        cmd += ["--set", ov]
    return subprocess.Popen(cmd + ["--auto-resume"], cwd=REPO, env=dict(ray_env(), PYTHONUNBUFFERED="1"),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait(pred, timeout: float, what: str):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_learner_node_lost_then_auto_resumed_on_a_reformed_cluster(two_nodes, trained, tiny_model_dir, prompt_file,
                                                                   tmp_path):
    out = tmp_path / "faulty"
    args = overrides(tiny_model_dir, prompt_file, out, f"trainer.ray_address={two_nodes.address}",
                     "verifiers=" + VERIFIERS % "")
    latest = out / "checkpoints" / "latest"
    t0 = time.monotonic()
    p1 = _train_cli(args, tmp_path / "run1.log")
    try:
        _wait(lambda: (latest.is_file() and latest.read_text().strip() == "step_000001") or p1.poll() is not None,
              600, "checkpoint 1")
        assert p1.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
        two_nodes.nodes[1].kill()  # the learner node: raylet, object store, ranks (SIGKILL by PID)
        try:
            rc = p1.wait(600)
        except subprocess.TimeoutExpired:
            raise AssertionError("the run did not end within 600 s of its learner node's loss; its log ends:\n"
                                 + (tmp_path / "run1.log").read_text()[-4000:]) from None
    finally:
        if p1.poll() is None:
            p1.kill()
    log1 = (tmp_path / "run1.log").read_text()
    killed_s = time.monotonic() - t0
    assert rc == 1, log1[-3000:]
    assert "Traceback" not in log1, log1[-3000:]
    (line,) = [l for l in log1.splitlines() if l.startswith("softverify train:")]
    assert "died at step 2" in line or "lost at step 2" in line, line
    assert f"the last complete checkpoint is {out / 'checkpoints' / 'step_000001'}" in line, line
    assert "--resume" in line, line
    assert ckpt.latest(out / "checkpoints").name == "step_000001"

    # re-form: a new learner node joins the same head; --auto-resume finishes the run
    two_nodes.add_node(2, {"learner_node": 2}, {"role": "learner"})
    two_nodes.wait_for_nodes(2)
    t1 = time.monotonic()
    p2 = _train_cli(args, tmp_path / "run2.log")
    try:
        rc2 = p2.wait(900)
    finally:
        if p2.poll() is None:
            p2.kill()
    log2 = (tmp_path / "run2.log").read_text()
    assert rc2 == 0 and "Traceback" not in log2, log2[-3000:]
    for step in range(1, STEPS + 1):
        a, b = out / "checkpoints" / ckpt.step_name(step), trained["out"] / "checkpoints" / ckpt.step_name(step)
        assert ckpt.read_state(a)["data_position"] == ckpt.read_state(b)["data_position"] == 2 * step
        same_weights(a / "hf", b / "hf")
    same_weights(out / "final", trained["out"] / "final")
    new_worker = node_ids(two_nodes)[1]
    assert json.loads((out / "placement.json").read_text())["learner_ranks"] == [new_worker, new_worker]
    print(f"multinode node loss: killed run {killed_s:.0f} s, resumed run {time.monotonic() - t1:.0f} s")


def _sweep_spec(model_dir: Path, prompts: Path, out: Path, steps: int = 1, **base_extra) -> dict:
    """Two concurrent trials of 1.5 CPUs each (driver 0.5, worker 0.5, rank 0.5): on two
    2-CPU nodes they can only run at once one per node. The same config twice (same lr, same
    seed), so each trial is the other's uninterrupted reference."""
    base = {
        "model": {"path": str(model_dir)}, "data": {"source": "file", "path": str(prompts)},
        "rollout": {"num_workers": 1, "placement": {"num_cpus": 0.5}, "prompts_per_step": 2, "group_size": 4,
                    "max_new_tokens": 8, "stop": []},
        "learner": {"num_ranks": 1, "placement": {"num_cpus": 0.5}, "micro_batch_size": 8},
        "algorithm": {"estimator": "sample"},
        "verifiers": [{"kind": "hard"}, {"kind": "length", "params": {"max_chars": 200}}],
        "trainer": {"steps": steps, "eval_every": 0, "checkpoint_every": 1, "keep_checkpoints": steps,
                    "diagnostics": False},
    }
    for section, values in base_extra.items():
        base[section] = {**base[section], **values}
    return {"name": "multinode", "output_dir": str(out), "base": base,
            "search": {"learner.lr": {"grid": [1e-2, 1e-2]}},
            "tune": {"metric": "reward_mean", "mode": "max", "num_samples": 1, "scheduler": "fifo",
                     "max_concurrent_trials": 2}}


def _kill_node_after_first_checkpoint(cluster, node_id: str, trials: Path, seen: dict, stop: threading.Event):
    """Watch the sweep's trial directories; once the trial whose driver runs on ``node_id``
    has a complete checkpoint, SIGKILL that node (raylet, object store, workers). Records
    every trial's placement as it was, and which trial was cut off at which checkpoint."""
    while not stop.is_set():
        for run in sorted(trials.glob("*")) if trials.is_dir() else []:
            try:
                seen.setdefault("placement", {})[run.name] = json.loads((run / "placement.json").read_text())
            except (OSError, ValueError):
                continue
            latest = ckpt.latest(run / "checkpoints")
            if seen["placement"][run.name]["driver"] == [node_id] and latest is not None:
                seen["killed"], seen["at"] = run.name, latest.name
                seen["state_mtime"] = (latest / "trainer_state.json").stat().st_mtime_ns
                cluster.nodes[-1].kill()
                return
        time.sleep(0.1)


def test_sweep_trials_run_on_both_nodes_and_a_lost_node_is_resumed(two_nodes, tiny_model_dir, prompt_file, tmp_path):
    """Trials spread over both nodes; the worker node is killed once its trial has a
    checkpoint: that trial is an ERROR row, the other finishes; on a re-formed cluster
    ``--resume --resume-errored`` continues the cut-off trial from its checkpoint, and it
    ends with weights identical, bit for bit, to its twin that was never interrupted."""
    import pandas as pd

    from softverify.platform.sweep.run import check_trial_placement, run_sweep
    from softverify.platform.sweep.spec import parse_sweep

    two_nodes.ensure_nodes(2, 2, {"learner_node": 2}, {"role": "learner"})  # the shape conftest gives it
    head, worker = node_ids(two_nodes)
    # a trial's actors share one placement bundle: roles pinned to different nodes cannot
    with pytest.raises(ConfigError, match=r"a sweep trial's actors \(one placement bundle, on one node\): one actor "
                                          r"asks \{CPU: 1, learner_node: 1, rollout_node: 1\} but no single node"):
        run_sweep(parse_sweep(_sweep_spec(tiny_model_dir, prompt_file, tmp_path / "split",
                                          rollout={"placement": {"resources": {"rollout_node": 1}}},
                                          learner={"placement": {"resources": {"learner_node": 1}}})))
    with pytest.raises(ConfigError, match=r"base\.learner\.placement\.node_labels: node label selectors are not "
                                          r"supported"):
        check_trial_placement(parse_sweep(_sweep_spec(tiny_model_dir, prompt_file, tmp_path / "lab",
                                                      learner={"placement": {"node_labels": {"role": "learner"}}})))

    out = tmp_path / "sweep"
    spec = _sweep_spec(tiny_model_dir, prompt_file, out, steps=STEPS)
    seen, stop = {}, threading.Event()
    watcher = threading.Thread(target=_kill_node_after_first_checkpoint,
                               args=(two_nodes, worker, out / "trials", seen, stop), daemon=True)
    t0 = time.monotonic()
    watcher.start()
    try:
        results = run_sweep(parse_sweep(spec))
    finally:
        stop.set()
        watcher.join(10)
    wall = time.monotonic() - t0
    assert "killed" in seen, f"the worker node's trial never checkpointed: {seen}"
    table = pd.read_csv(out / "results.csv").set_index("trial_id")
    table.index = table.index.astype(str)
    killed = seen["killed"]  # a trial's run directory is named by its Tune trial id
    (twin,) = [t for t in table.index if t != killed]
    # the trials ran one per node (PACK: a trial's actors sit on its driver's node)
    drivers = {}
    for t, where in ((killed, seen["placement"][killed]),
                     (twin, json.loads((out / "trials" / twin / "placement.json").read_text()))):
        (d,) = where["driver"]
        drivers[t] = d
        assert set(where["rollout_workers"]) | set(where["learner_ranks"]) | set(where["verifiers"].values()) == {d}
    assert drivers == {killed: worker, twin: head}, drivers
    assert table.loc[killed, "status"] == "ERROR", table.to_string()
    assert table.loc[twin, "status"] == "COMPLETED" and table.loc[twin, "steps"] == STEPS, table.to_string()
    print(f"multinode sweep: 2 trials in {wall:.0f} s, the worker node killed at {seen['at']} of trial {killed}: "
          f"{table.loc[killed, 'error']}")

    # re-form the cluster: a new worker node joins the same head; the errored trial resumes
    two_nodes.add_node(2, {"learner_node": 2}, {"role": "learner"})
    two_nodes.wait_for_nodes(2)
    t1 = time.monotonic()
    results = run_sweep(parse_sweep(spec), resume=True, resume_errored=True)
    assert len(results) == 2 and not results.errors
    table = pd.read_csv(out / "results.csv").set_index("trial_id")
    table.index = table.index.astype(str)
    assert set(table["status"]) == {"COMPLETED"} and set(table["steps"]) == {STEPS}, table.to_string()
    cut, ref = out / "trials" / killed, out / "trials" / twin
    # continued from its checkpoint (not re-run: that checkpoint was not written again), every step logged once
    assert (cut / "checkpoints" / seen["at"] / "trainer_state.json").stat().st_mtime_ns == seen["state_mtime"]
    assert [json.loads(line)["step"] for line in (cut / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    for step in range(1, STEPS + 1):
        same_weights(cut / "checkpoints" / ckpt.step_name(step) / "hf", ref / "checkpoints" / ckpt.step_name(step) / "hf")
    same_weights(cut / "final", ref / "final")
    print(f"multinode sweep: --resume --resume-errored finished the cut-off trial in {time.monotonic() - t1:.0f} s")
