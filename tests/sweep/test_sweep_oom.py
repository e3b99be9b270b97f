"""A sweep survives a trial that Ray's memory monitor kills: that trial is one ERROR row with
Ray's reason, and the sweep goes on to the next trial and writes its report.

The kill is real: a fresh local Ray (in a subprocess, so the suite's other clusters are not
touched) runs with its memory monitor's threshold a few GiB above what this machine uses
now, and the first trial allocates memory until the monitor kills its process. Without
:mod:`softverify.platform.sweep.killed_trials`, Tune 2.60 raises ``RuntimeError: Caught
unexpected exception`` out of ``Tuner.fit()`` here (measured before the guard existed).
The trials' bodies are stand-ins for the trainer (which is tested elsewhere): what is under
test is the sweep machinery -- ``run_sweep``, Tune, the kill, the report."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PERTURBQA = REPO / ".." / "shared" / "data" / "perturbqa"
GIB = 2**30
BASE = {  # validated like any sweep's base; the trials below do not train it
    "data": {"source": "perturbqa", "max_prompts": 32, "eval_size": 8, "eval_genes": None,
             "mirror": str(PERTURBQA.resolve())},
    "rollout": {"num_workers": 1, "prompts_per_step": 2, "group_size": 4, "max_new_tokens": 8, "stop": []},
    "learner": {"num_ranks": 1, "micro_batch_size": 8},
    "algorithm": {"estimator": "sample"},
    "verifiers": [{"kind": "length", "params": {"max_chars": 200}}],
    "trainer": {"steps": 1, "eval_every": 0},
}

SCRIPT = textwrap.dedent('''
    import sys, time
    HOG_GIB = {hog_gib}
    import softverify.platform.sweep.run as run
    from softverify.platform.sweep.spec import load_sweep

    def trial(config, raw_spec):
        from ray import tune
        if config["learner.lr"] == 1e-3:  # the memory hog: allocate (and touch) until killed
            held = []
            for _ in range(HOG_GIB * 4):
                held.append(bytearray(256 * 2**20))
                time.sleep(0.1)
            raise SystemExit("the memory monitor did not kill this trial")
        tune.report({"reward_mean": 0.5, "step": 1})

    run.run_trial = trial  # make_trainable wraps whatever run_trial is
    results = run.run_sweep(load_sweep(sys.argv[1], []))
    print("SWEEP RETURNED", len(results), "trials", flush=True)
''')


@pytest.mark.timeout(300)
def test_oom_killed_trial_is_an_error_row_and_the_sweep_goes_on(tmp_path):
    vm = psutil.virtual_memory()
    if vm.available < 6 * GIB:
        pytest.skip(f"needs 6 GiB of free memory to provoke Ray's memory monitor safely; {vm.available / GIB:.1f} "
                    "GiB available")
    used = vm.total - vm.available
    # the monitor kills a worker above this fraction of the machine: 3 GiB above now leaves room for
    # the sweep's own Ray processes and driver (~1.5 GiB), the hog alone crosses it
    threshold = (used + 3 * GIB) / vm.total
    out = tmp_path / "sweep"
    raw = {"base": BASE, "search": {"learner.lr": {"grid": [1e-3, 1e-4]}}, "output_dir": str(out),
           "tune": {"scheduler": "fifo", "metric": "reward_mean", "num_samples": 1, "max_concurrent_trials": 1}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "oom_sweep.py").write_text(SCRIPT.replace("{hog_gib}", "5"))  # past the threshold, within free memory
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    env.update(RAY_memory_usage_threshold=f"{threshold:.4f}", RAY_memory_monitor_refresh_ms="100",
               PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(tmp_path / "oom_sweep.py"), str(tmp_path / "sweep.yaml")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "SWEEP RETURNED 2 trials" in log, log[-4000:]

    table = pd.read_csv(out / "results.csv").set_index("config/learner.lr")
    hog, ok = table.loc[1e-3], table.loc[1e-4]
    assert hog["status"] == "ERROR", table.to_string()
    # the reason is Ray's own: its memory monitor killed the trial's process
    assert hog["error"].startswith("ray.exceptions.OutOfMemoryError: the trial's process was killed"), hog["error"]
    assert "low on memory" in hog["error"]
    assert ok["status"] == "COMPLETED" and ok["final/reward_mean"] == 0.5


def test_a_killed_process_becomes_an_actor_death_and_other_errors_pass_through():
    import pickle

    from ray.exceptions import OutOfMemoryError, RayActorError, RayTaskError, WorkerCrashedError

    from softverify.platform.sweep.killed_trials import TrialProcessKilled, as_actor_death, tolerate_killed_trials

    oom = as_actor_death(OutOfMemoryError("1 worker(s) were killed due to the node running low on memory."))
    assert isinstance(oom, TrialProcessKilled) and isinstance(oom, RayActorError)
    assert str(oom) == ("ray.exceptions.OutOfMemoryError: the trial's process was killed. "
                        "1 worker(s) were killed due to the node running low on memory.")
    assert str(pickle.loads(pickle.dumps(oom))) == str(oom)  # Tune stores trial errors
    assert isinstance(as_actor_death(WorkerCrashedError()), TrialProcessKilled)
    task_error = RayTaskError("f", "Traceback ...", ValueError("boom"))
    assert as_actor_death(task_error) is task_error
    assert tolerate_killed_trials() and tolerate_killed_trials()  # idempotent
