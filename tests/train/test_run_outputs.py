"""What a run shows and writes, end to end through ``softverify train`` on a real local Ray
with a tiny random model: a reward function by path scoring the training, TensorBoard
scalars read back with TensorBoard's own reader, the closing summary, the "resuming from
step N" line and the model card in ``final/README.md``."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from knockdown_prompts import whole_gene_test_rows, write_knockdown_questions
from softverify.cli import main
from softverify.platform.train.summary import format_summary, run_summary

pytestmark = pytest.mark.timeout(600)

GENES = ["HBG1", "FTL", "RPL3"]


@pytest.fixture(scope="module")
def gene_prompts(tmp_path_factory) -> Path:
    """16 training questions, and a test split of 3 target genes x 4 knockdowns with both
    labels in every gene, so the periodic eval has a per-gene AUROC to report."""
    rng = np.random.default_rng(1)
    p = tmp_path_factory.mktemp("prompts") / "q.jsonl"
    rows = []
    for i in range(16):
        a, b = rng.choice(["TP53", "MYC", "GATA1", "KLF1"], 2, replace=False)
        rows.append({"pert": str(a), "gene": str(b), "label": int(i % 2), "split": "train"})
    return write_knockdown_questions(p, rows + whole_gene_test_rows(GENES))


@pytest.fixture(scope="module")
def reward_fn(tmp_path_factory) -> Path:
    """A user's reward file: per sample, pays ``bonus`` for "yes" on the row's label 1 and
    logs what it was given; a batched twin pays 0.2 for every parsed answer."""
    d = tmp_path_factory.mktemp("user")
    p = d / "my_reward.py"
    p.write_text(textwrap.dedent(f"""
        import json

        def score(completion, answer, row, bonus):
            with open({str(d / 'calls.jsonl')!r}, "a") as f:
                f.write(json.dumps({{"completion": completion, "answer": answer, "row": row}}) + "\\n")
            return bonus if (answer == "yes") == bool(row["label"]) else 0.0

        def batch(answers):
            return [0.2 if a is not None else float("nan") for a in answers]
    """))
    return p


def _train(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["train"] + argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_with_a_reward_function_tensorboard_summary_resume_and_model_card(
        ray_cluster, tiny_model_dir, gene_prompts, reward_fn, tmp_path, capsys):
    out = tmp_path / "run"
    verifiers = (f"[{{kind: python, name: mine, params: {{function: '{reward_fn}:score', bonus: 0.9}}}}, "
                 f"{{kind: python, name: batch, weight: 0.5, params: {{function: '{reward_fn}:batch', batched: true}}}}]")
    base = ["--model", str(tiny_model_dir), "--output-dir", str(out),
            "--set", "data.source=file", "--set", f"data.path={gene_prompts}", "--set", "data.eval_size=12",
            "--set", "rollout.num_workers=1", "--set", "learner.num_ranks=1", "--set", "rollout.prompts_per_step=4",
            "--set", "learner.lr=1e-2", "--set", "trainer.progress=false", "--set", "trainer.eval_every=1",
            "--set", "trainer.checkpoint_every=1", "--set", "trainer.tensorboard=true",
            "--set", f"verifiers={verifiers}"]
    rc, stdout, err = _train(base + ["--steps", "2"], capsys)
    assert rc == 0, err[-3000:]
    assert "resuming" not in stdout

    # the user's function scored every sample: both candidate answers of each question (the
    # direct style's enumerated estimator), with the row's fields and the parsed answer
    calls = [json.loads(l) for l in (reward_fn.parent / "calls.jsonl").read_text().splitlines()]
    assert calls and {c["answer"] for c in calls} == {"yes", "no"}
    assert all(c["completion"].startswith("<answer>") and {"pert", "gene", "label", "question"} <= set(c["row"])
               for c in calls)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # one candidate of each question earns the bonus: the mean is exactly bonus / 2
        assert r["reward/mine"] == pytest.approx(0.45) and r["abstain/mine"] == 0.0
        assert r["reward/batch"] == pytest.approx(0.2) and r["reward_std/batch"] == pytest.approx(0.0)
        assert r["questions_trained"] == 4  # the function's reward tells the answers apart: every group trains

    # resume to step 3: a line says so, and every stream continues without repeating a step
    rc, stdout, err = _train(base + ["--steps", "3", "--resume"], capsys)
    assert rc == 0, err[-3000:]
    assert re.search(r"^softverify train: resuming from step 2 of 3 \(.*step_000002, data position 8\)$", stdout, re.M)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]

    # TensorBoard: every numeric metric of every step, read back with TensorBoard's own reader
    tb = _scalars(out / "tensorboard")
    for key in ("reward_mean", "reward/mine", "reward/batch", "eval_forced/auc_per_gene", "eval_forced/auroc",
                "time/step_s", "questions_trained"):
        assert [s for s, _ in tb[key]] == [1, 2, 3], key
        assert [v for _, v in tb[key]] == pytest.approx([r[key] for r in rows], rel=1e-6), key
    numeric = {k for r in rows for k, v in r.items() if k != "step" and isinstance(v, (int, float))}
    assert numeric <= set(tb), sorted(numeric - set(tb))

    # the closing summary: final and best eval with intervals, and where everything is
    s = run_summary(rows)
    assert s["steps"] == 3 and s["questions_trained"] == 12 and s["evals"] == 3
    best = max(rows, key=lambda r: (r["eval_forced/auc_per_gene"], -r["step"]))
    last = rows[-1]
    assert f"run summary: 3 steps, 12 questions trained" in stdout
    assert (f"final eval (step 3): auc_per_gene {last['eval_forced/auc_per_gene']:.3f} "
            f"[{last['eval_forced/auc_per_gene_lo']:.3f}, {last['eval_forced/auc_per_gene_hi']:.3f}] over 3 genes, "
            f"pooled AUROC {last['eval_forced/auroc']:.3f} [{last['eval_forced/auroc_lo']:.3f}, "
            f"{last['eval_forced/auroc_hi']:.3f}]") in stdout
    assert f"best eval  (step {best['step']}, by auc_per_gene): auc_per_gene {best['eval_forced/auc_per_gene']:.3f}" \
        in stdout
    final = out / "final"
    assert f"final model: {final} (model card: {final / 'README.md'})" in stdout
    assert f"metrics: {out / 'metrics.jsonl'}  plot: {out / 'metrics.png'}" in stdout

    # the model card: Hugging Face YAML front matter, then a body
    card = (final / "README.md").read_text()
    m = re.match(r"---\n(.*?)\n---\n\n# run\n", card, re.S)
    assert m, card[:500]
    meta = yaml.safe_load(m.group(1))
    assert meta["base_model"] == str(tiny_model_dir) and meta["library_name"] == "softverify"
    assert {"softverify", "grpo", "python"} <= set(meta["tags"])
    sv = meta["softverify"]
    assert sv["data"] == {"source": "file", "split": "train", "eval_split": "test", "path": str(gene_prompts)}
    assert [(v["name"], v["kind"], v["weight"]) for v in sv["verifiers"]] == [("mine", "python", 1.0),
                                                                              ("batch", "python", 0.5)]
    assert sv["verifiers"][0]["params"] == {"function": f"{reward_fn}:score", "bonus": 0.9}
    assert sv["training"]["steps"] == 3 and sv["training"]["questions_trained"] == 12
    assert sv["final_eval"]["step"] == 3
    assert sv["final_eval"]["auc_per_gene"] == pytest.approx(last["eval_forced/auc_per_gene"])
    assert sv["final_eval"]["auroc_lo"] == pytest.approx(last["eval_forced/auroc_lo"])
    assert sv["best_eval"]["step"] == best["step"]
    assert "| mine | python | 1 | - |" in card and "- final (step 3): auc_per_gene" in card
    # no temporary sibling is left beside final/ (the card was written inside the atomic rename)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".final")]


def test_summary_of_a_run_without_eval_says_why_and_how_to_evaluate(tmp_path):
    rows = [{"step": 1, "questions_trained": 3}, {"step": 2, "questions_trained": 0}]
    s = run_summary(rows)
    assert s["final_eval"] is None and s["best_eval"] is None and s["questions_trained"] == 3
    text = format_summary(s, tmp_path, tmp_path / "final", eval_every=25)
    assert ("no periodic eval was logged (trainer.eval_every=25 is more than the 2 steps run); "
            f"score the model with `softverify eval {tmp_path / 'final'}`") in text
    assert "trainer.eval_every=0" in format_summary(s, tmp_path, tmp_path / "final", eval_every=0)


def test_best_eval_falls_back_to_pooled_auroc_and_prefers_the_earliest_tie():
    rows = [{"step": 1, "eval_forced/auroc": 0.6}, {"step": 2, "eval_forced/auroc": 0.7},
            {"step": 3, "eval_forced/auroc": 0.7}, {"step": 4, "eval_forced/auroc": 0.65}]
    s = run_summary(rows)
    assert s["best_by"] == "auroc" and s["best_eval"]["step"] == 2 and s["final_eval"]["step"] == 4
    assert "best eval  (step 2, by pooled AUROC): pooled AUROC 0.700" in format_summary(s, Path("o"), Path("o/f"), 1)


def test_tensorboard_after_a_resume_shows_each_step_once(tmp_path):
    """A run killed after logging step 3 but checkpointed at step 1 logs steps 2-3 again when
    resumed: metrics.jsonl drops the old lines and TensorBoard purges the old events."""
    from softverify.platform.train.metrics import MetricsLogger

    log = MetricsLogger(tmp_path, use_tensorboard=True)
    for step in (1, 2, 3):
        log.log(step, {"reward_mean": 0.1 * step, "note": "text is not a scalar", "nan": float("nan"), "ok": True})
    log.close()
    log = MetricsLogger(tmp_path, use_tensorboard=True, truncate_after_step=1)
    for step in (2, 3):
        log.log(step, {"reward_mean": 0.5 + step})
    log.close()
    tb = _scalars(tmp_path / "tensorboard")
    assert tb["reward_mean"] == [(1, pytest.approx(0.1)), (2, 2.5), (3, 3.5)]
    assert tb["ok"] == [(1, 1.0)]  # a bool is 0/1; its steps 2-3 were purged with the others and not re-logged
    assert "note" not in tb and "nan" not in tb
    assert [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
