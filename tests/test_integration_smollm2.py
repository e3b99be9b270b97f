"""Integration: the real SmolLM2-135M-Instruct on the real PerturbQA K562 questions,
through the CLI a user runs, on a real local Ray cluster (2 rollout workers, 2 DeepSpeed ranks)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def _run(args, tmp_path, timeout=900):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", SOFTVERIFY_CACHE=os.environ.get("SOFTVERIFY_CACHE", ""))
    if not env["SOFTVERIFY_CACHE"]:
        env.pop("SOFTVERIFY_CACHE")  # share the converted SmolLM2 in ~/.cache/softverify
    r = subprocess.run([sys.executable, "-m", "softverify.cli", *args], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=tmp_path)
    assert r.returncode == 0, f"exit {r.returncode}\nSTDOUT:\n{r.stdout[-3000:]}\nSTDERR:\n{r.stderr[-6000:]}"
    return r


def test_train_and_eval_smollm2_on_perturbqa(shared_data, tmp_path):
    out = tmp_path / "run"
    _run([
        "train", "--steps", "2", "--data-mirror", str(shared_data / "perturbqa"), "--output-dir", str(out),
        "--set", "rollout.max_new_tokens=24", "--set", "rollout.prompts_per_step=2",
        "--set", "rollout.group_size=2", "--set", "learner.micro_batch_size=2",
        "--set", "trainer.eval_every=2", "--set", "data.eval_genes=2", "--set", "trainer.progress=false",
    ], tmp_path)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    last = rows[-1]
    # the periodic eval: every row of 2 whole validation target genes, read per gene
    assert last["eval_forced/auc_per_gene_genes"] == 2 and last["eval/n"] == last["eval_forced/auc_per_gene_rows"]
    assert 0.0 <= last["eval_forced/auc_per_gene"] <= 1.0 and 0.0 <= last["eval/unanswered_rate"] <= 1.0
    assert 0 < last["response_len_mean"] <= 24
    assert last["reward/hard"] is not None and last["reward/format"] is not None
    samples = [json.loads(l) for l in (out / "samples.jsonl").read_text().splitlines()]
    assert "knock" in samples[0]["question"].lower()  # one of several paraphrases
    assert (out / "final" / "model.safetensors").is_file()

    ev = tmp_path / "eval.json"
    _run(["eval", str(out / "final"), "--data-mirror", str(shared_data / "perturbqa"), "--limit", "4",
          "--max-new-tokens", "24", "--batch-size", "4", "-o", str(ev)], tmp_path)
    m = json.loads(ev.read_text())
    assert m["n"] == 4 and m["split"] == "test" and set(m["lookups"]) >= {"a_rate_other_lines", "b_rate_same_train"}
    for k in ("tpr", "tnr", "precision", "f1", "mcc", "balanced_accuracy", "unanswered_rate"):
        assert k in m
