"""CoT with the enumerated estimator (``prompt.style=cot``, ``algorithm.estimator=enumerate``):
G reasonings are sampled per prompt, every candidate answer follows each of them, the answer
gets the exact expected gradient given its reasoning and the reasoning a sampled policy
gradient whose advantage is its exact expected reward against its group.

No Ray: the rollout core and the learner's micro-batch loss run in-process on tiny models made
here (the random one from conftest and the scripted bigram one of test_answer_forcing)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from softverify.actors.rollout import RolloutCore, enumerated_turns, sampling_from
from softverify.config import build_config
from softverify.engines.base import Generation
from softverify.learner.advantages import reasoning_advantages
from softverify.algo import mode_for
from softverify.learner.microbatch import completion_rows
from softverify.model.loading import load_causal_lm
from softverify.learner.seqbatch import completion_logprobs_shared
from softverify.types import Sample
from softverify.task.answer import candidate_ids, forcing_suffix, parse_answer

from test_answer_forcing import ROWS, _ids, make_bigram_model

COT_ENUM = ["prompt.style=cot", "algorithm.estimator=enumerate"]


def test_reasoning_advantages_hand_computed():
    v = np.array([0.2, 0.6, 0.5, 0.5, 0.9])
    p = np.array([0, 0, 1, 1, 2])
    np.testing.assert_allclose(reasoning_advantages(v, p, "drgrpo"), [-0.2, 0.2, 0.0, 0.0, 0.0], atol=1e-12)
    # grpo: / (population std 0.2 + 1e-6); a group with no spread (or one member) gets 0
    np.testing.assert_allclose(reasoning_advantages(v, p, "grpo"), [-1.0, 1.0, 0.0, 0.0, 0.0], atol=1e-5)


@pytest.fixture(scope="module")
def bigram_dir(tmp_path_factory, tiny_model_dir):
    return make_bigram_model(tmp_path_factory.mktemp("bigram"), tiny_model_dir)


def test_enumerated_turns_cut_the_models_own_answer_and_close_open_reasoning(bigram_dir):
    cfg = build_config({}, COT_ENUM + [f"model.path={bigram_dir}", "rollout.torch_threads=1"])
    core = RolloutCore(str(bigram_dir), cfg.model, cfg.rollout)
    tok, eos = core.engine.tokenizer, core.engine.tokenizer.eos_token_id
    cands = candidate_ids(tok, ["yes", "no"], "</answer>")
    own = "ok</think>\n<answer>no</answer>"
    answered = Generation(own, _ids(tok, own), [-1.0] * len(_ids(tok, own)), "stop")
    t_yes, t_no = enumerated_turns(tok, core.engine.eos_ids, "<think>\n", answered, cands)
    # the model's own '<answer>no</answer>' is cut off, its '</think>' kept, the answer opened again
    assert t_yes.text == "ok</think>\n" + forcing_suffix("<think>\nok</think>\n") + "yes</answer>"
    assert t_no.text.endswith("\n<answer>no</answer>") and t_yes.unforced_text == own
    n = len(t_yes.token_ids) - sum(t_yes.forced_mask)
    assert t_yes.forced_mask == [0] * n + [1] * (len(t_yes.token_ids) - n)
    assert t_yes.token_ids[:n] == t_no.token_ids[:n] and t_yes.logprobs[:n] == [-1.0] * n
    assert t_yes.logprobs[n:] == [0.0] * (len(t_yes.token_ids) - n) and t_yes.token_ids[-len(cands[0]):] == cands[0]
    ended = Generation("GATA1", _ids(tok, "GATA1") + [eos], [-2.0] * (len(_ids(tok, "GATA1")) + 1), "stop")
    t_yes, _ = enumerated_turns(tok, core.engine.eos_ids, "<think>\n", ended, cands)
    assert t_yes.text == "GATA1\n</think>\n<answer>yes</answer>" and eos not in t_yes.token_ids  # EOS dropped


def test_rollout_puts_every_candidate_after_every_sampled_reasoning(bigram_dir):
    cfg = build_config({}, COT_ENUM + [f"model.path={bigram_dir}", "rollout.max_new_tokens=8", "rollout.batch_size=8",
                                       "rollout.torch_threads=1"])
    core = RolloutCore(str(bigram_dir), cfg.model, cfg.rollout)
    samples = core.reasoned_candidates(ROWS, 3, sampling_from(cfg.rollout, seed=1), ["yes", "no"], group_ids=[5, 9])
    assert len(samples) == 2 * 3 * 2 and [s.group for s in samples] == [5] * 6 + [9] * 6
    assert [parse_answer(s.completion) for s in samples] == ["yes", "no"] * 6
    for a, b in zip(samples[::2], samples[1::2]):  # one reasoning, both candidates
        n = a.n_sampled
        assert n == b.n_sampled and a.completion_token_ids[:n] == b.completion_token_ids[:n]
        assert a.unforced_completion == b.unforced_completion and a.unforced_completion.startswith("<think>")
    # the reasoning keeps its behaviour logprobs: each is the engine's logprob of that token
    scored = core.engine.score([s.prompt_token_ids for s in samples], [s.completion_token_ids for s in samples], 1.0)
    for s, lp in zip(samples, scored):
        np.testing.assert_allclose(s.behaviour_logprobs[: s.n_sampled], lp[: s.n_sampled], atol=1e-4)
        assert s.behaviour_logprobs[s.n_sampled:] == [0.0] * s.n_forced


def _batch(tok, rng, reasonings=(("TP53 is a tumour suppressor", "MYC"), ("globin genes", "HBG1 is a globin</think>")),
           header: str = ""):
    """One step's worth of CoT-enumerate samples: 2 prompts (after a shared ``header``) x the
    reasonings given for each x {yes, no}."""
    cands = candidate_ids(tok, ["yes", "no"], "</answer>")
    prompts = [_ids(tok, header + "Does TP53 knockdown change MYC?\n<think>\n"),
               _ids(tok, header + "Does GATA1 change HBG1?\n<think>\n")]
    out = []
    for p, rs in zip(prompts, reasonings):
        for r in rs:
            rid = _ids(tok, r)
            suffix = _ids(tok, forcing_suffix("<think>\n" + r))
            lp = rng.normal(-3.0, 0.5, len(rid)).tolist()
            for c in cands:
                out.append(Sample(prompt_id="0", prompt="", completion="", prompt_token_ids=p,
                                  completion_token_ids=rid + suffix + c,
                                  behaviour_logprobs=lp + [0.0] * (len(suffix) + len(c)),
                                  forced_mask=[0] * len(rid) + [1] * (len(suffix) + len(c))))
    return out, cands


def test_cot_enumerated_loss_matches_the_hand_computed_loss_and_gradients(tiny_model_dir):
    """The learner's micro-batch loss equals, in value and every gradient (1e-6), the loss
    written out by hand: per reasoning q = softmax of the candidates' logprobs (candidate
    tokens only), the exact answer term -sum sg(q) (r - E_q r) log q - c H(q) over the step's
    contexts, and each reasoning's tokens (once) trained with ratio * (V - mean V) of its prompt."""
    cfg = build_config({}, COT_ENUM + ["rollout.group_size=2", "algorithm.advantage=drgrpo",
                                       "algorithm.entropy_coef=0.2", "algorithm.eps_low=10", "algorithm.eps_high=10"])
    model, tok = load_causal_lm(str(tiny_model_dir))
    ss, cands = _batch(tok, np.random.default_rng(0))
    # behaviour logprobs near the model's own so the ratios are ~1 but not exactly
    with torch.no_grad():
        lp0 = completion_logprobs_shared(model, [s.prompt_token_ids for s in ss], [s.completion_token_ids for s in ss],
                                         tok.pad_token_id, 1.0).logp
    rng = np.random.default_rng(1)
    for b, s in enumerate(ss):
        n = s.n_sampled
        s.behaviour_logprobs[:n] = (lp0[b, :n].numpy() + rng.normal(0, 0.05, n)).tolist()
        if b % 2:
            s.behaviour_logprobs[:n] = ss[b - 1].behaviour_logprobs[:n]  # one reasoning, one sampling
    r = torch.tensor([0.9, 0.1, 0.9, 0.1, 0.3, 0.7, 0.3, 0.7])
    total_tokens = sum(s.n_sampled for s in ss)  # what the trainer passes: K x the reasoning tokens
    loss, st = mode_for(cfg).micro_loss(model, tok, ss, r, total_tokens, len(ss))
    loss.backward()
    g_learner = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    cb = completion_logprobs_shared(model, [s.prompt_token_ids for s in ss], [s.completion_token_ids for s in ss],
                                    tok.pad_token_id, 1.0)
    seq = torch.stack([cb.logp[b, len(s.completion_token_ids) - len(cands[b % 2]): len(s.completion_token_ids)].sum()
                       for b, s in enumerate(ss)]).view(4, 2)
    logq = torch.log_softmax(seq, -1)
    q = logq.exp().detach()
    rr = r.view(4, 2)
    V = (q * rr).sum(-1)
    answer = (-(q * (rr - V[:, None]) * logq).sum() - 0.2 * (-(logq.exp() * logq).sum())) / 4
    A = torch.stack([V[0] - V[:2].mean(), V[1] - V[:2].mean(), V[2] - V[2:].mean(), V[3] - V[2:].mean()])
    reasoning = 0.0
    for c in range(4):
        s = ss[2 * c]
        n = s.n_sampled
        ratio = torch.exp(cb.logp[2 * c, :n] - torch.tensor(s.behaviour_logprobs[:n]))
        reasoning = reasoning - (ratio * A[c]).sum()
    reasoning = reasoning / (total_tokens / 2)
    hand = answer + reasoning
    hand.backward()
    g_hand = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    assert abs(float(loss.detach()) - float(hand.detach())) < 1e-6
    assert st["policy_expected_reward"] == pytest.approx(float(V.mean()), abs=1e-6)
    assert st["reasoning/adv_abs_mean"] == pytest.approx(float(A.abs().mean()), abs=1e-6)
    assert g_learner.keys() == g_hand.keys() and g_hand
    for k in g_hand:
        assert torch.allclose(g_learner[k], g_hand[k], atol=1e-6, rtol=0), k
    assert abs(float(reasoning.detach())) > 1e-6  # the reasoning term is there: without it the check could not fail


@pytest.mark.parametrize("header", ["", "You are a careful biologist: think, then answer yes or no.\n"])
def test_enumerated_encoding_equals_the_plain_path_in_logprobs_and_gradients(tiny_model_dir, header):
    """Prompt once (a shared header once for both), heads (reasoning + suffix) once each,
    packed two to a row where they fit, candidates from their head's columns of the cache:
    the same logprobs as encoding every prompt + completion in full, and the same gradients (1e-5)."""
    from softverify.model.loading import MIN_SHARED_PREFIX, common_prefix_len
    from softverify.learner.seqbatch import completion_logprobs_enumerated, completion_logprobs_packed, enumerated_heads

    model, tok = load_causal_lm(str(tiny_model_dir))
    long = "TP53 is a tumour suppressor; its loss lifts p21 and changes the cell cycle programme, MYC among it"
    ss, cands = _batch(tok, np.random.default_rng(0), [(long, "MYC", "no"), ("globin genes", "HBG1 is a globin</think>")],
                       header)
    shared = common_prefix_len([ss[0].prompt_token_ids, ss[-1].prompt_token_ids])
    assert (shared >= MIN_SHARED_PREFIX) == bool(header), shared
    cand_len = [len(c) for c in cands]
    heads = enumerated_heads(ss, 2, cand_len)
    owner = [0] * 3 + [1] * 2
    rows = completion_rows(owner, [len(h) for h in heads])
    assert any(len(r) > 1 for r in rows), rows  # two short heads share a packed row: the mask is exercised
    w = torch.tensor(np.random.default_rng(2).normal(size=(len(ss), max(len(s.completion_token_ids) for s in ss))),
                     dtype=torch.float32)

    def run(fn):
        cb = fn()
        (cb.logp * w[:, : cb.logp.shape[1]]).sum().backward()
        g = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        return cb, g

    enc, g_enc = run(lambda: completion_logprobs_enumerated(model, ss, 2, cand_len, tok.pad_token_id, 0.7))
    plain, g_plain = run(lambda: completion_logprobs_packed(model, [s.prompt_token_ids for s in ss],
                                                            [s.completion_token_ids for s in ss], tok.pad_token_id, 0.7))
    assert torch.equal(enc.mask, plain.mask)
    assert torch.allclose(enc.logp, plain.logp, atol=1e-5), (enc.logp - plain.logp).abs().max()
    assert g_enc.keys() == g_plain.keys() and g_plain
    for k in g_plain:
        assert torch.allclose(g_enc[k], g_plain[k], atol=1e-5, rtol=1e-4), k
    broken = list(ss)
    broken[1] = Sample(prompt_id="0", prompt="", completion="", prompt_token_ids=ss[1].prompt_token_ids,
                       completion_token_ids=ss[3].completion_token_ids)
    with pytest.raises(ValueError, match="rows 0-1 are not one context's 2 candidates"):
        enumerated_heads(broken, 2, cand_len)
