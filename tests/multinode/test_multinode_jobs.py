"""`softverify submit` to a two-node loopback cluster (the head's dashboard serves Ray Jobs):
the job's training run places its rollout worker on the head and its learner rank on the
worker node through the placement keys, and its outputs stay where --output-root says."""
from __future__ import annotations

import json
import time

import pytest

from softverify import cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_submitted_job_places_roles_on_both_nodes(two_nodes_with_dashboard, tiny_model_dir, prompt_file, tmp_path,
                                                     capsys):
    from softverify.platform.jobs.client import JobsClient, JobsError

    c = two_nodes_with_dashboard
    deadline = time.monotonic() + 90
    while True:  # the dashboard comes up a moment after `ray start` returns
        try:
            JobsClient(c.dashboard).list()
            break
        except JobsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    ids = c.node_ids()
    head, worker = ids[c.nodes[0].temp_dir], ids[c.nodes[1].temp_dir]
    root = tmp_path / "shared"
    sets = ["data.source=file", f"data.path={prompt_file}", "trainer.eval_every=0", "trainer.progress=false",
            "rollout.num_workers=1", "rollout.prompts_per_step=2", "rollout.group_size=2",
            "rollout.placement.num_cpus=0.5", "learner.num_ranks=1", "learner.placement.num_cpus=0.5",
            "learner.micro_batch_size=4", "verifiers=[{kind: hard}]", "trainer.diagnostics=false",
            "rollout.placement.resources={rollout_node: 1}", "learner.placement.resources={learner_node: 1}"]
    argv = ["submit", "--address", c.dashboard, "--output-root", str(root), "--", "train",
            "--model", str(tiny_model_dir), "--steps", "1", "--output-dir", "runs/mn"]
    for s in sets:
        argv += ["--set", s]
    t0 = time.monotonic()
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:] + out[-3000:]
    where = json.loads((root / "runs" / "mn" / "placement.json").read_text())
    assert where["rollout_workers"] == [head] and where["learner_ranks"] == [worker]
    assert where["driver"] == [head]  # a Ray Jobs driver runs on the head
    assert (root / "runs" / "mn" / "final" / "model.safetensors").is_file()
    print(f"multinode job: submitted and finished in {time.monotonic() - t0:.0f} s")
