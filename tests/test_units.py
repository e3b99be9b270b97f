"""Small pure pieces: answer parsing, verifiers, packing, sharding, data order, metrics, checkpoints."""
import json

import numpy as np
import pytest
import torch

from softverify.data import PromptOrder
from softverify.learner.rank import shard_indices
from softverify.model.loading import pack_sequences
from softverify.platform.train import checkpoint as ckpt
from softverify.evaluation.classification import classification_metrics, majority_answers, metrics_from_completions
from softverify.types import Sample
from softverify.verifiers import build_verifier
from softverify.task.answer import parse_answer
from softverify.verifiers.format import format_score

GOOD = "<think> GATA1 drives erythroid genes. </think> <answer> yes </answer>"


def S(text, **meta):
    return Sample("p", "", text, meta)


def test_parse_answer():
    assert parse_answer(GOOD) == "yes"
    assert parse_answer("<answer>NO</answer>") == "no"
    assert parse_answer("<answer>no</answer> then <answer> yes </answer>") == "yes"
    assert parse_answer("<answer>maybe</answer>") is None
    assert parse_answer("yes") is None


def test_hard_verifier_hand_checked():
    v = build_verifier("hard")
    s = v.score([S(GOOD, label=1), S(GOOD, label=0), S("no tags", label=1), S(GOOD)])
    assert s[:3].tolist() == [1.0, 0.0, 0.0]
    assert np.isnan(s[3])  # no label: abstain


def test_format_score_hand_checked():
    assert format_score(GOOD) == 1.0
    assert format_score("") == 0.0
    # think ok (2 checks), no answer block: 2/6
    assert format_score("<think> x </think>") == pytest.approx(2 / 6)
    # two answers: checks 3 and 5 fail, 4 ok, 6 ok -> 4/6
    assert format_score("<think>a</think><answer>yes</answer><answer>no</answer>") == pytest.approx(4 / 6)
    assert format_score(GOOD + " trailing") == pytest.approx(5 / 6)
    # direct-style turns (start with <answer>): one answer, yes/no, nothing after -> 3 checks
    assert format_score("<answer>yes</answer>") == 1.0
    assert format_score("<answer>maybe</answer>") == pytest.approx(2 / 3)
    assert format_score("<answer>no</answer\n\nNo") == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown verifier kind 'nope'"):
        build_verifier("nope")
    with pytest.raises(ValueError, match="max_chars must be > 0"):
        build_verifier("format", max_chars=0)


def test_length_verifier():
    s = build_verifier("length", max_chars=10).score([S(""), S("x" * 5), S("x" * 50)])
    assert s.tolist() == [1.0, 0.5, 0.0]


def test_pack_sequences_alignment():
    b = pack_sequences([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], pad_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0]]
    # loss_mask[t] marks prediction of input_ids[t+1] as a completion token
    assert b.loss_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]


def test_shard_indices():
    assert shard_indices(5, 2) == [[0, 1, 2], [3, 4]]
    assert sum(map(len, shard_indices(16, 3))) == 16


def test_prompt_order_is_deterministic_and_resumable():
    a = PromptOrder(5, seed=3)
    first = a.take(7)
    assert sorted(first[:5]) == list(range(5))  # one epoch is a permutation
    b = PromptOrder(5, seed=3, position=4)
    assert b.take(3) == first[4:7]
    with pytest.raises(ValueError, match="empty"):
        PromptOrder(0, 1)


def test_classification_metrics_hand_computed():
    labels = [1, 1, 0, 0, 0, 1]
    answers = [1, None, 0, 1, 0, 1]  # the unanswered positive is a false negative
    m = classification_metrics(labels, answers)
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (2, 1, 2, 1)
    assert m["tpr"] == pytest.approx(2 / 3) and m["tnr"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)
    assert m["mcc"] == pytest.approx((2 * 2 - 1 * 1) / 9)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["unanswered_rate"] == pytest.approx(1 / 6)
    assert metrics_from_completions([1], [GOOD])["tp"] == 1
    assert majority_answers([[1, 1, 0], [0, 1], [None, None]]) == [1, None, None]


def test_checkpoint_is_atomic(tmp_path):
    root = tmp_path / "ck"

    def ok(ds, hf):
        ds.mkdir()
        (ds / "w").write_text("1")

    ckpt.save(root, 1, {"step": 1}, ok)
    assert ckpt.latest(root).name == "step_000001"

    def crash(ds, hf):
        ds.mkdir()
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        ckpt.save(root, 2, {"step": 2}, crash)
    assert ckpt.latest(root).name == "step_000001"  # the torn step never became latest
    assert ckpt.read_state(ckpt.latest(root)) == {"step": 1}
    for s in (2, 3, 4):
        ckpt.save(root, s, {"step": s}, ok, keep=2)
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000003", "step_000004"]


def test_hf_finish_drops_unsampled_padding_after_stop_string(tiny_model_dir):
    """HF pads a row that completed a stop string; with pad == EOS that padding must not be
    mistaken for a sampled EOS (the learner would train on a token the policy never sampled)."""
    from softverify.engines.base import SamplingParams
    from softverify.engines.hf import HFEngine

    e = HFEngine(str(tiny_model_dir), torch_threads=1)
    tok = e.tokenizer
    body = tok("<think> x </think> <answer> yes </answer>", add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    lps = [-1.0] * (len(body) + 3)
    g = e._finish(body + [eos, eos, eos], lps, SamplingParams(stop=["</answer>"]))
    assert g.token_ids == body and g.finish_reason == "stop" and len(g.logprobs) == len(body)
    # a genuinely sampled EOS (no stop string before it) is kept so the policy learns to stop
    g2 = e._finish(body[:3] + [eos, eos], [-1.0] * 5, SamplingParams(stop=["</answer>"]))
    assert g2.token_ids == body[:3] + [eos] and g2.finish_reason == "stop"


def test_token_logprobs_completion_only_matches_full_logits(tiny_model_dir):
    """Projecting only completion positions to the vocabulary changes neither values nor gradients."""
    import torch.nn.functional as F

    from softverify.model.loading import load_causal_lm, token_logprobs

    model = load_causal_lm(str(tiny_model_dir), "float32")[0]
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    comps = [[20, 21], [22, 23, 24, 25]]
    batch = pack_sequences(prompts, comps, pad_id=0)
    logp, ent = token_logprobs(model, batch, temperature=0.7, with_entropy=True)
    (logp * batch.loss_mask).sum().backward()
    g_new = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()

    full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                 position_ids=batch.position_ids, use_cache=False).logits[:, :-1].float() / 0.7
    lp_all = F.log_softmax(full, -1)
    ref = lp_all.gather(-1, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    ref_ent = -(lp_all.exp() * lp_all).sum(-1)
    (ref * batch.loss_mask).sum().backward()
    g_ref = [p.grad.clone() for p in model.parameters() if p.grad is not None]

    m = batch.loss_mask.bool()
    assert m.sum() == 6
    torch.testing.assert_close(logp[m], ref[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent[m], ref_ent.detach()[m], atol=1e-5, rtol=1e-5)
    assert len(g_new) == len(g_ref)
    for a, b in zip(g_new, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
