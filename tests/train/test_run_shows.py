"""What a run shows, end to end through ``softverify train`` with a tiny random model: an eval
at the end of a run shorter than ``trainer.eval_every``, samples.jsonl with each question's
label and the policy's probability of each candidate, a progress bar led by what moves, the
base-rate warning before the run starts, and quiet logs (library noise only with --verbose)
in a real subprocess whose own local Ray streams the actors' output to it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from knockdown_prompts import whole_gene_test_rows, write_knockdown_questions
from softverify.cli import main

pytestmark = pytest.mark.timeout(900)

GENES = ["HBG1", "FTL", "RPL3"]


@pytest.fixture(scope="module")
def gene_prompts(tmp_path_factory) -> Path:
    """16 training questions and a test split of 3 target genes x 4 knockdowns with both
    labels in every gene, so the eval has a per-gene AUROC. Every question is asked once, so
    its text finds its label."""
    p = tmp_path_factory.mktemp("prompts") / "q.jsonl"
    pairs = [(a, b) for a in ["TP53", "MYC", "GATA1", "KLF1"] for b in ["CDKN1A", "TAL1", "LMO2", "HBB"]]
    rows = [{"pert": a, "gene": b, "label": int(i % 3 == 0), "split": "train"} for i, (a, b) in enumerate(pairs)]
    return write_knockdown_questions(p, rows + whole_gene_test_rows(GENES))


def _base(model: Path, prompts: Path, out: Path) -> list[str]:
    return ["--model", str(model), "--output-dir", str(out), "--set", "data.source=file",
            "--set", f"data.path={prompts}", "--set", "data.eval_size=12", "--set", "rollout.num_workers=1",
            "--set", "learner.num_ranks=1", "--set", "rollout.prompts_per_step=4", "--set", "learner.lr=1e-2",
            "--set", "trainer.checkpoint_every=0"]


def test_short_run_ends_with_an_eval_and_logs_labels_and_candidate_probabilities(
        ray_cluster, tiny_model_dir, gene_prompts, tmp_path, capsys):
    out = tmp_path / "run"
    # hard pays the label at weight 0.02 beside format's 1 for any well-formed answer: a fixed
    # answer earns within 0.01 of following the label, the base-rate trap the run warns about
    argv = _base(tiny_model_dir, gene_prompts, out) + [
        "--steps", "3", "--set", "trainer.eval_every=2", "--set", "trainer.progress=true",
        "--set", "verifiers=[{kind: hard, weight: 0.02}, {kind: format, weight: 1.0}]"]
    rc = main(["train"] + argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-3000:]

    # evals at step 2 (eval_every) and step 3, the run's last step, which is not a multiple of it
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert ["eval_forced/auc_per_gene" in r for r in rows] == [False, True, True]
    assert "final eval (step 3): auc_per_gene" in cap.out

    # the base-rate warning, before the run started (before the bar's first draw)
    warn = re.search(r"^softverify train: warning: on 16 training questions, BASE-RATE TRAP: always (yes|no) earns",
                     cap.err, re.M)
    assert warn, cap.err[-3000:]
    assert cap.err.index(warn.group(0)) < cap.err.index("GRPO")
    # the bar leads with the policy's expected reward and the last eval's per-gene AUROC with its interval
    bar = [seg for seg in re.split(r"[\r\n]", cap.err) if seg.startswith("GRPO") and "3/3" in seg][-1]
    last = rows[-1]
    assert re.search(rf", E\[r\]={last['policy_expected_reward']:.3f}, auc/gene={last['eval_forced/auc_per_gene']:.3f} "
                     rf"\[{last['eval_forced/auc_per_gene_lo']:.2f},{last['eval_forced/auc_per_gene_hi']:.2f}\], len=",
                     bar), bar
    assert "reward=" not in bar  # constant by construction with the enumerated estimator

    # samples.jsonl: per step both candidates of one question, its label, and the policy's
    # probability of each candidate (summing to 1 over the question's candidates)
    questions = {json.loads(l)["question"]: json.loads(l) for l in gene_prompts.read_text().splitlines()}
    samples = [json.loads(l) for l in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1, 1, 2, 2, 3, 3]
    for a, b in zip(samples[0::2], samples[1::2]):
        assert a["question"] == b["question"] and {a["answer"], b["answer"]} == {"yes", "no"}
        assert a["label"] == b["label"] == questions[a["question"]]["label"]
        assert 0 < a["policy_p"] < 1 and a["policy_p"] + b["policy_p"] == pytest.approx(1, abs=1e-5)
        for s in (a, b):  # hard at 0.02 and format at 1, weighted mean: the right answer earns 1
            assert s["reward"] == pytest.approx(1.0 if (s["answer"] == "yes") == bool(s["label"]) else 1 / 1.02)
    # the policy's probabilities are its own: they move as it learns (lr 1e-2 on a random model)
    assert len({round(s["policy_p"], 6) for s in samples}) > 2


def test_a_sampled_run_logs_labels_and_no_made_up_probabilities(ray_cluster, tiny_model_dir, gene_prompts, tmp_path,
                                                                capsys):
    out = tmp_path / "run"
    argv = _base(tiny_model_dir, gene_prompts, out) + [
        "--steps", "1", "--set", "trainer.eval_every=0", "--set", "trainer.progress=false",
        "--set", "algorithm.estimator=sample", "--set", "rollout.group_size=2", "--set", "rollout.max_new_tokens=6",
        "--set", "verifiers=[{kind: hard}, {kind: length, params: {max_chars: 200}}]"]
    rc = main(["train"] + argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-3000:]
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("eval") for k in rows[0])  # eval_every=0: no eval, not even at the end
    assert "BASE-RATE TRAP" not in cap.err  # the length verifier tells answers apart: no base-rate trap
    questions = {json.loads(l)["question"]: json.loads(l) for l in gene_prompts.read_text().splitlines()}
    samples = [json.loads(l) for l in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2
    for s in samples:
        assert s["label"] == questions[s["question"]]["label"] and s["policy_p"] is None and "answer" in s


#: lines libraries print during a run; none may reach a quiet run's terminal
NOISE = [r"Setting accelerator to CPU", r"shm_comm_op built", r"Loading weights", r"Writing model shards",
         r"Started a local Ray instance", r"Token authentication", r"repeated \d+x across cluster",
         r"\[WARNING\]", r"it/s\]", r"FutureWarning", r"UserWarning"]


def _run_cli(args: list[str], tmp_path: Path) -> tuple[int, list[str]]:
    """``softverify train`` in its own process (its own local Ray): the lines of its stdout
    and stderr together, each ``\\r``-redrawn bar counted once as it last stood."""
    env = {**os.environ, "PYTHONWARNINGS": "default", "COLUMNS": "120"}
    p = subprocess.run([sys.executable, "-m", "softverify.cli", "train", *args], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=420)
    lines = []
    for line in (p.stdout + "\n" + p.stderr).split("\n"):
        seg = [s for s in line.split("\r") if s.strip()]
        if seg:
            lines.append(re.sub(r"\x1b\[[0-9;]*m", "", seg[-1]))
    return p.returncode, lines


@pytest.mark.slow
def test_quiet_run_shows_no_library_noise_and_verbose_keeps_it(tiny_model_dir, gene_prompts, tmp_path):
    """No ``ray_cluster`` here: the CLI starts its own local Ray, as a user's run does, so the
    actors' output (DeepSpeed's warnings and shm line per rank, transformers' load and save
    bars) streams to this process's terminal unless the quiet switches hold in every actor."""
    args = ["--set", "trainer.eval_every=0", "--set", "trainer.progress=false", "--steps", "1"]
    rc, quiet = _run_cli(_base(tiny_model_dir, gene_prompts, tmp_path / "quiet") + args, tmp_path)
    assert rc == 0, "\n".join(quiet[-40:])
    noise = [l for l in quiet if any(re.search(p, l) for p in NOISE)]
    assert not noise, noise
    assert any(l.startswith("run summary: 1 steps") for l in quiet)  # the product's own lines still show
    assert len(quiet) <= 6, quiet

    rc, verbose = _run_cli(_base(tiny_model_dir, gene_prompts, tmp_path / "verbose") + args + ["--verbose"], tmp_path)
    assert rc == 0, "\n".join(verbose[-40:])
    seen = {p for p in NOISE if any(re.search(p, l) for l in verbose)}
    # the driver's Ray line and the learner's DeepSpeed lines at least (actor lines stream asynchronously)
    assert {"Started a local Ray instance", "Setting accelerator to CPU"} <= seen, verbose
    assert any(l.startswith("run summary: 1 steps") for l in verbose)


def test_quiet_runtime_env_leaves_a_submitted_jobs_own_settings_alone():
    """Inside ``ray job submit`` Ray merges the driver's runtime_env into the job's and refuses
    a variable or field both set: what the job sets stays the job's."""
    from ray.runtime_env.runtime_env import _merge_runtime_env

    from softverify.infra.quiet import LIBRARY_ENV, QUIET_ENV_VAR, runtime_env

    plain = runtime_env("")
    assert plain["env_vars"] == {QUIET_ENV_VAR: "1", **LIBRARY_ENV}
    assert plain["worker_process_setup_hook"] == "softverify.infra.quiet.setup_worker"
    job = {"working_dir": "gcs://x.zip", "env_vars": {"TRANSFORMERS_VERBOSITY": "info", "A": "1"},
           "worker_process_setup_hook": "mine.setup"}
    mine = runtime_env(json.dumps({"runtime_env": job}))
    assert "TRANSFORMERS_VERBOSITY" not in mine["env_vars"] and "worker_process_setup_hook" not in mine
    merged = _merge_runtime_env(job, mine)
    assert merged is not None and merged["env_vars"]["TRANSFORMERS_VERBOSITY"] == "info"
    assert merged["env_vars"][QUIET_ENV_VAR] == "1" and merged["working_dir"] == "gcs://x.zip"
    assert _merge_runtime_env(job, plain) is None  # what Ray would refuse without this care
