"""GRPO end to end on a real local Ray cluster with a tiny random model.

>= 2 rollout workers and a 2-rank DeepSpeed (gloo) learner group, as a user would run it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from safetensors.torch import load_file

from softverify.config import ConfigError, build_config
from softverify.platform.train import checkpoint as ckpt
from softverify.platform.train.trainer import Trainer

pytestmark = pytest.mark.timeout(600)




def tiny_cfg(model_dir: Path, prompts: Path, out: Path, **over):
    ov = [
        f"model.path={model_dir}", "data.source=file", f"data.path={prompts}", f"trainer.output_dir={out}",
        "rollout.num_workers=2", "rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=12",
        "rollout.stop=[]", "learner.num_ranks=2", "learner.micro_batch_size=2", "learner.lr=1e-2",
        "algorithm.estimator=sample",  # these tests exercise the sampled-GRPO machinery
        "trainer.progress=false", "trainer.steps=2", "trainer.checkpoint_every=1",
        # random tiny models never answer, so hard/format are flat; length varies in every group
        "verifiers=[{kind: hard}, {kind: format, weight: 0.5}, {kind: length, weight: 1.0, params: {max_chars: 200}}]",
    ] + [f"{k}={v}" for k, v in over.items()]
    return build_config({}, ov)


def _fit(cfg) -> tuple[Path, list[dict]]:
    """Train ``cfg`` to the end; the final model dir and the metrics rows it logged."""
    tr = Trainer(cfg)
    try:
        final = tr.fit()
    finally:
        tr.shutdown()
    rows = [json.loads(l) for l in (Path(cfg.trainer.output_dir) / "metrics.jsonl").read_text().splitlines()]
    return final, rows


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(d / "model.safetensors"))


def test_train_two_steps(ray_cluster, tiny_model_dir, prompt_file, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, prompt_file, tmp_path / "run")
    final, rows = _fit(cfg)
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward/hard", "reward/format", "reward/length", "entropy", "clip_frac", "grad_norm",
                "time/rollout_s", "time/verify_s", "time/learn_s", "throughput/rollout_tok_s", "response_len_mean",
                "learn_page_faults"):
        assert key in rows[-1], key
    assert rows[-1]["learn_page_faults"] >= 0
    assert rows[-1]["data_position"] == 4
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step_000002"
    assert (tmp_path / "run" / "metrics.png").is_file()
    # training moved the weights away from the initial model
    w0, w1 = _weights(tiny_model_dir), _weights(final)
    assert any(not torch.equal(w0[k], w1[k]) for k in w1)


def test_time_budget_stops_early_and_eval_reports_both_readings(ray_cluster, tiny_model_dir, prompt_file, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, prompt_file, tmp_path / "run", **{
        "trainer.steps": 5, "trainer.time_budget_minutes": 1e-4, "trainer.eval_every": 1,
        "trainer.checkpoint_every": 0, "learner.num_ranks": 1, "rollout.num_workers": 1,
        "trainer.eval_mode": "generate"})
    final, rows = _fit(cfg)
    assert [r["step"] for r in rows] == [1]  # the 0.006 s budget is spent after the first step
    assert (final / "model.safetensors").is_file()
    # a random tiny model never writes <answer>: free reading all unanswered, forced reading answers all
    assert rows[0]["eval/n"] == 8 and rows[0]["eval/unanswered_rate"] == 1.0
    assert rows[0]["eval_forced/n"] == 8 and rows[0]["eval_forced/unanswered_rate"] == 0.0
    # the forced score of every question is ranked against the labels, with an interval
    assert 0.0 <= rows[0]["eval_forced/auroc"] <= 1.0
    assert rows[0]["eval_forced/auroc_lo"] <= rows[0]["eval_forced/auroc"] <= rows[0]["eval_forced/auroc_hi"]


@pytest.mark.parametrize("over", [
    # (ZeRO-1 with every weight syncing: the float32 arm of the half-precision test below)
    {"learner.zero_stage": 3, "learner.train_layers": "null"},
    # partial weight sync: only the trained tensors travel, the workers still match the learner
    # (one learner rank: what travels is under test, not ZeRO; both workers are still checked)
    {"learner.train_layers": 1, "learner.num_ranks": 1},
    {"learner.lora.enabled": True, "learner.lora.r": 4, "learner.train_layers": "null", "learner.num_ranks": 1},
    # the collective path (gloo here, NCCL on GPUs): rank 0 broadcasts, no object-store copy; under
    # ZeRO-3 (every rank gathers) and partial (only the top layer's tensors travel)
    {"learner.sync_method": "collective", "learner.zero_stage": 3, "learner.train_layers": 1},
], ids=["zero3", "top_layer", "lora", "collective_zero3_partial"])
def test_weight_sync_rollout_equals_learner(ray_cluster, tiny_model_dir, prompt_file, tmp_path, over):
    cfg = tiny_cfg(tiny_model_dir, prompt_file, tmp_path / "run", **{"trainer.steps": 1, **over})
    tr = Trainer(cfg)
    try:
        tr.setup()
        merged, _ = tr.rounds.rollout([0, 1], 1, tr.weights)
        samples = ray.get(merged)
        before_worker = ray.get(tr.workers[0].score.remote(samples))
        tr.train_step()  # trains and syncs
        learner_lp = tr.learners.logprobs(samples)
        for w in tr.workers:
            worker_lp = ray.get(w.score.remote(samples))
            for a, b in zip(worker_lp, learner_lp):
                np.testing.assert_allclose(a, b, atol=1e-4)
        moved = max(np.max(np.abs(np.array(a) - np.array(b))) for a, b in zip(before_worker, learner_lp))
        assert moved > 1e-3, "the step should have changed the policy"
        # behaviour logprobs recorded at sampling time equal the pre-step teacher-forced ones
        for s, lp in zip(samples, before_worker):
            np.testing.assert_allclose(s.behaviour_logprobs, lp, atol=1e-4)
    finally:
        tr.shutdown()


def test_half_precision_sync_halves_the_bytes_and_stays_close(ray_cluster, tiny_model_dir, prompt_file, tmp_path):
    """learner.sync_dtype: fp32 ships every weight's 4 bytes (sync/bytes = the model file's
    tensor bytes) and the workers match the learner exactly; bf16 ships exactly half, and the
    workers then sample from rounded weights: close to the learner, but not equal."""
    wfile = _weights(tiny_model_dir)
    full = sum(v.numel() * v.element_size() for v in wfile.values())
    got = {}
    for dt in ("float32", "bfloat16"):
        cfg = tiny_cfg(tiny_model_dir, prompt_file, tmp_path / dt,
                       **{"trainer.steps": 1, "learner.train_layers": "null", "learner.sync_dtype": dt,
                          "learner.num_ranks": 1})  # the bytes do not depend on the ranks; both workers checked
        tr = Trainer(cfg)
        try:
            tr.setup()
            samples = ray.get(tr.rounds.rollout([0, 1], 1, tr.weights)[0])
            m = tr.train_step()
            learner_lp = tr.learners.logprobs(samples)
            got[dt] = (m["sync/bytes"], max(float(np.max(np.abs(np.array(a) - np.array(b))))
                                            for w in tr.workers  # every worker
                                            for a, b in zip(ray.get(w.score.remote(samples)), learner_lp)))
            assert m["sync/bytes_total"] == m["sync/bytes"]  # a fresh run's workers load the model file: one sync
        finally:
            tr.shutdown()
    assert got["float32"][0] == full and got["bfloat16"][0] == full // 2, got
    assert got["float32"][1] < 1e-4, got
    assert 1e-6 < got["bfloat16"][1] < 0.1, got


def test_resume_continues_exactly(ray_cluster, tiny_model_dir, prompt_file, tmp_path):
    """At 1 x 1 (a 2-rank DeepSpeed resume is exercised by the pipelined-resume test and the
    process-fault test, which compare every checkpoint's weights with an uninterrupted run)."""
    out = tmp_path / "run"
    one = {"rollout.num_workers": 1, "learner.num_ranks": 1}
    cfg1 = tiny_cfg(tiny_model_dir, prompt_file, out, **{"trainer.steps": 1, **one})
    tr = Trainer(cfg1)
    try:
        tr.fit()
    finally:
        tr.shutdown()
    saved = ckpt.latest(out / "checkpoints")
    state = ckpt.read_state(saved)
    assert state["step"] == 1 and state["data_position"] == 2
    saved_w = _weights(saved / "hf")

    # a fresh run without --resume refuses to overwrite
    with pytest.raises(ConfigError, match="pass --resume"):
        Trainer(tiny_cfg(tiny_model_dir, prompt_file, out, **{"trainer.steps": 3, **one})).setup()

    tr2 = Trainer(tiny_cfg(tiny_model_dir, prompt_file, out, **{"trainer.steps": 3, **one}), resume=True)
    try:
        tr2.setup()
        assert tr2.step == 1 and tr2.order.position == 2
        # learner and rollout weights are the saved ones
        restored = ray.get([a.state_dict.remote() for a in tr2.learners.actors])[0]  # all ranks: ZeRO-3
        for k, v in saved_w.items():
            assert torch.equal(restored[k], v), k
        # data order continues: the next prompts are what an uninterrupted run takes next
        from softverify.data import PromptOrder

        ref_order = PromptOrder(tr2.order.n, cfg1.data.seed)
        ref_order.take(2)
        assert ref_order.take(4) == PromptOrder(tr2.order.n, cfg1.data.seed, position=2).take(4)
        tr2.logger.close()
    finally:
        tr2.shutdown()
    # "auto" (what restartable cluster jobs use) resumes because a checkpoint exists
    tr3 = Trainer(tiny_cfg(tiny_model_dir, prompt_file, out, **{"trainer.steps": 3, **one}), resume="auto")
    try:
        tr3.fit()
    finally:
        tr3.shutdown()
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["data_position"] == 6


def test_impossible_gpu_request_is_refused(ray_cluster, tiny_model_dir, prompt_file, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, prompt_file, tmp_path / "run", **{"learner.placement.num_gpus": 1})
    with pytest.raises(ConfigError,
                       match=r"impossible resource request.*2 GPU.*lower learner\.placement\.num_gpus \(2 x 1\)"):
        Trainer(cfg).setup()


def test_the_default_run_fits_a_two_cpu_cluster():
    from softverify.platform.train.bootstrap import required_resources, resource_breakdown

    cfg = build_config({}, [])
    assert required_resources(cfg) == {"CPU": 2.0, "GPU": 0.0}
    assert resource_breakdown(cfg, "CPU").startswith("rollout.placement.num_cpus (2 x 0.5), "
                                                     "learner.placement.num_cpus (2 x 0.5)")


def test_dynamic_sampling_refills_then_skips_a_step_without_signal(ray_cluster, tiny_model_dir, prompt_file, tmp_path):
    """A random tiny model never answers, so the hard verifier gives every sample 0: every
    group has zero variance. 'refill' samples max_refill_rounds more rounds, finds nothing,
    and the step trains on nothing (the weights do not move) but is counted and logged."""
    cfg = tiny_cfg(tiny_model_dir, prompt_file, tmp_path / "run", **{
        "trainer.steps": 1, "verifiers": "[{kind: hard}]", "algorithm.dynamic_sampling": "refill",
        "algorithm.max_refill_rounds": 2, "trainer.checkpoint_every": 0,
        "rollout.num_workers": 1, "learner.num_ranks": 1})  # counts do not depend on the layout
    final, rows = _fit(cfg)
    row = rows[0]
    assert row["dynamic/refill_rounds"] == 2 and row["dynamic/groups_sampled"] == 6
    assert row["dynamic/groups_kept"] == 0 and row["dynamic/zero_var_group_frac"] == 1.0
    assert row["data_position"] == 6 and "grad_norm" not in row  # the learner was not called
    w0, w1 = _weights(tiny_model_dir), _weights(final)
    assert all(torch.equal(w0[k], w1[k]) for k in w1)


def test_stratify_by_label_alternates_labels(ray_cluster, tiny_model_dir, prompt_file, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, prompt_file, tmp_path / "run", **{"data.stratify_by": "label",
                                                                    "rollout.num_workers": 1, "learner.num_ranks": 1})
    tr = Trainer(cfg)
    try:
        tr.setup()
        ids = tr.order.take(6)
        assert [int(tr.train_rows[i]["label"]) for i in ids] == [1, 0] * 3
        tr.logger.close()
    finally:
        tr.shutdown()
    with pytest.raises(ConfigError, match="neither 'label' nor a verifier name"):
        tiny_cfg(tiny_model_dir, prompt_file, tmp_path / "x", **{"data.stratify_by": "wm"})


def test_cot_enumerate_samples_reasonings_and_raises_the_rewarded_answer(ray_cluster, tiny_model_dir, tmp_path):
    """CoT with the enumerated estimator on real Ray and a 2-rank DeepSpeed world: every
    training label is 'yes' and the hard verifier rewards it. Each step the workers sample 2
    reasonings per prompt with the current weights (so weights are synced every step, unlike
    the direct style's lazy sync), both answers follow each reasoning, and the policy's
    expected reward over its answers rises."""
    prompts = tmp_path / "yes.jsonl"
    with open(prompts, "w") as f:
        for a, b in [("TP53", "MYC"), ("GATA1", "KLF1"), ("TAL1", "LMO2"), ("HBG1", "CDKN1A")]:
            f.write(json.dumps({"question": f"Is a knockdown of {a} in K562 cells likely to result in differential "
                                f"expression of {b}?", "pert": a, "gene": b, "label": 1, "split": "train"}) + "\n")
    cfg = tiny_cfg(tiny_model_dir, prompts, tmp_path / "run", **{
        "prompt.style": "cot", "algorithm.estimator": "enumerate", "algorithm.advantage": "drgrpo",
        "rollout.group_size": 2, "rollout.max_new_tokens": 6, "rollout.stop": "['</answer>']",
        "verifiers": "[{kind: hard}, {kind: length, weight: 0.1, params: {max_chars: 200}}]",
        "trainer.steps": 4, "trainer.checkpoint_every": 0, "learner.lr": 3e-3, "trainer.eval_every": 0})
    _, rows = _fit(cfg)
    assert all(r["learn_seqs"] == 8 for r in rows)  # 2 prompts x 2 reasonings x 2 candidates
    assert all(r["sync/bytes"] > 0 for r in rows)  # the next step's reasonings come from the new weights
    assert all("reasoning/pg_loss" in r and "reasoning/adv_abs_mean" in r for r in rows)
    assert rows[0]["reward/hard"] == 0.5  # yes and no after every reasoning
    assert rows[-1]["policy_expected_reward"] > rows[0]["policy_expected_reward"]


def test_enumerate_estimator_raises_the_rewarded_answer(ray_cluster, tiny_model_dir, tmp_path):
    """Every training label is 'yes' and the hard verifier rewards the label: with the
    enumerated estimator the learner sees both candidates of each prompt and the policy's
    probability of 'yes' (over the closed set) must rise, on the prompts it trained on."""
    from softverify.actors.rollout import RolloutCore
    from softverify.config import ModelConfig
    from softverify.learner.seqbatch import completion_logprobs_packed

    prompts = tmp_path / "yes.jsonl"
    with open(prompts, "w") as f:
        for i, (a, b) in enumerate([("TP53", "MYC"), ("GATA1", "KLF1"), ("TAL1", "LMO2"), ("HBG1", "CDKN1A")]):
            f.write(json.dumps({"question": f"Is a knockdown of {a} in K562 cells likely to result in differential "
                                f"expression of {b}?", "pert": a, "gene": b, "label": 1, "split": "train"}) + "\n")
    cfg = tiny_cfg(tiny_model_dir, prompts, tmp_path / "run", **{
        "algorithm.estimator": "enumerate", "rollout.stop": "['</answer>']", "verifiers": "[{kind: hard}]",
        "trainer.steps": 4, "trainer.checkpoint_every": 0, "learner.lr": 3e-3, "trainer.eval_every": 0,
        "rollout.num_workers": 1, "learner.num_ranks": 1})  # the estimator, not the layout, is under test
    final, rows = _fit(cfg)
    assert all(r["learn_seqs"] == 4 and r["dynamic/groups_kept"] == 2 for r in rows)  # 2 prompts x 2 candidates
    assert rows[0]["reward/hard"] == 0.5  # yes and no each once per prompt
    # the policy's own expected reward (E_q[r]) is what moves: it rises as q(yes) does
    assert rows[-1]["policy_expected_reward"] > rows[0]["policy_expected_reward"]
    core = RolloutCore(str(tiny_model_dir), ModelConfig(path=str(tiny_model_dir)), cfg.rollout)
    samples = core.candidates([json.loads(l) for l in prompts.read_text().splitlines()], ["yes", "no"])
    assert [s.completion for s in samples[:2]] == ["<answer>yes</answer>", "<answer>no</answer>"]

    def p_yes(model_dir: Path) -> np.ndarray:
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_pretrained(str(model_dir))
        with torch.no_grad():
            cb = completion_logprobs_packed(m, [s.prompt_token_ids for s in samples],
                                            [s.completion_token_ids for s in samples], 0, 1.0)
        seq = (cb.logp * cb.mask).sum(-1).view(-1, 2)
        return torch.softmax(seq, -1)[:, 0].numpy()

    before, after = p_yes(tiny_model_dir), p_yes(final)
    assert (after > before).all(), (before, after)


def test_default_data_eval_logs_per_gene_auroc_on_whole_validation_genes(ray_cluster, tiny_model_dir, shared_data,
                                                                          tmp_path):
    """The default job's data section (PerturbQA K562, eval on the validation split's whole
    target genes) logs PerturbQA's per-gene AUROC with its interval at every eval."""
    cfg = build_config({}, [
        f"model.path={tiny_model_dir}", f"data.mirror={shared_data / 'perturbqa'}", "data.max_prompts=16",
        "data.eval_genes=3", f"trainer.output_dir={tmp_path / 'run'}", "trainer.steps=1", "trainer.eval_every=1",
        "trainer.checkpoint_every=0", "trainer.progress=false", "learner.num_ranks=1", "rollout.num_workers=1",
        "rollout.prompts_per_step=2"])
    assert cfg.data.eval_split == "val"
    _, rows = _fit(cfg)
    r = rows[0]
    assert r["eval_forced/auc_per_gene_genes"] == 3
    assert r["eval_forced/n"] == r["eval_forced/auc_per_gene_rows"]  # every eval row belongs to a scored gene
    assert r["eval_forced/auc_per_gene_lo"] <= r["eval_forced/auc_per_gene"] <= r["eval_forced/auc_per_gene_hi"]
