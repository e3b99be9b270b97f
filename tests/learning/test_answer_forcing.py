"""Answer forcing for CoT rollouts (``rollout.force_answer``): the rollout closes unanswered
turns and samples their answers; the learner trains only what the policy sampled.

No Ray: the rollout core and the learner's micro-batch loss run in-process on tiny models
made here (a random one, and a scripted bigram one whose answers after ``<answer>`` are
certain, so "every forced completion parses" is a property that can fail)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from softverify.actors.rollout import RolloutCore, Turn, force_answers, sampling_from
from softverify.config import ConfigError, build_config
from softverify.engines.base import Generation
from softverify.learner.losses import policy_loss
from softverify.algo.sampled import sampled_loss
from softverify.model.loading import load_causal_lm
from softverify.learner.seqbatch import completion_logprobs_shared, merge_identical, old_logprobs
from softverify.types import Sample
from softverify.task.answer import forcing_suffix, parse_answer
from softverify.verifiers.format import FormatVerifier, format_score

COT_FORCE = ["prompt.style=cot", "rollout.force_answer=true"]


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------- config


def test_force_answer_config_refusals_name_the_keys():
    cfg = build_config({}, COT_FORCE)
    assert cfg.rollout.force_answer and cfg.rollout.force_answer_tokens == 6
    assert not build_config({}, ["prompt.style=cot"]).rollout.force_answer  # off by default
    with pytest.raises(ConfigError, match=r"rollout.force_answer=true needs prompt.style='cot'.*'direct'"):
        build_config({}, ["rollout.force_answer=true"])
    with pytest.raises(ConfigError, match=r"does not open at '<answer>'.*assistant_prefix is '<answer>'"):
        build_config({}, COT_FORCE + ["rollout.assistant_prefix=<answer>"])
    with pytest.raises(ConfigError, match=r"rollout.force_answer_tokens"):
        build_config({}, COT_FORCE + ["rollout.force_answer_tokens=0"])


# --------------------------------------------------------------------------- rollout


def make_bigram_model(out_dir, tok_dir):
    """A Llama whose layers add nothing (o_proj, down_proj = 0), so the next token depends on
    the current one only, scripted on a few axes of the embedding: after '>' comes 'yes',
    then '</', 'answer', '>' (so '<answer>' is followed by 'yes</answer>' with probability
    ~1), and after '\\n' an EOS with probability ~1/2; every other token is followed by a
    near-uniform draw over the vocabulary (never an answer by chance)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    V = len(tok)
    cfg = LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    gt, yes, close, word, nl = (_ids(tok, t)[0] for t in (">", "yes", "</", "answer", "\n"))
    assert _ids(tok, "yes</answer>") == [yes, close, word, gt] and _ids(tok, "\n<answer>")[-1] == gt
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb[:, :5] = 0.0
        head[:, :5] = 0.0
        for axis, (src, nxt) in enumerate([(gt, yes), (yes, close), (close, word), (word, gt)]):
            emb[src] = 0.0
            emb[src, axis] = 1.0  # RMS-normed: 8 on this axis
            head[nxt, axis] = 6.0  # logit 48 against 0 for everything else
        emb[nl] = 0.0
        emb[nl, 4] = 1.0
        head[tok.eos_token_id, 4] = float(np.log(V - 1)) / 8.0  # EOS as likely as all the rest together
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def bigram_dir(tmp_path_factory, tiny_model_dir):
    return make_bigram_model(tmp_path_factory.mktemp("bigram"), tiny_model_dir)


ROWS = [{"question": "Is a knockdown of TP53 in K562 cells likely to result in differential expression of MYC?",
         "label": 1, "pert": "TP53", "gene": "MYC"},
        {"question": "Is a knockdown of GATA1 in K562 cells likely to result in differential expression of HBG1?",
         "label": 0, "pert": "GATA1", "gene": "HBG1"}]


def test_rollout_forces_every_unanswered_completion_to_answer(bigram_dir):
    cfg = build_config({}, COT_FORCE + [f"model.path={bigram_dir}", "rollout.max_new_tokens=8", "rollout.batch_size=8",
                                        "rollout.torch_threads=1"])
    core = RolloutCore(str(bigram_dir), cfg.model, cfg.rollout)
    eng, tok, prefix = core.engine, core.engine.tokenizer, cfg.rollout.assistant_prefix
    samples = core.generate(ROWS, 6, sampling_from(cfg.rollout, seed=1))
    assert len(samples) == 12
    forced = [s for s in samples if s.unforced_completion is not None]
    assert len(forced) >= 10  # the bigram model's reasoning never answers on its own
    for s in samples:
        assert parse_answer(s.completion) == "yes", s.completion
        assert len(s.forced_mask) in (0, len(s.completion_token_ids))
        assert len(s.behaviour_logprobs) == len(s.completion_token_ids)
    for s in forced:
        m = np.array(s.forced_mask)
        at = np.flatnonzero(m)
        suffix = _ids(tok, forcing_suffix(s.unforced_completion))
        # exactly the suffix's tokens, in one run, right after the reasoning the policy sampled
        assert [s.completion_token_ids[k] for k in at] == suffix and at.tolist() == list(range(at[0], at[0] + len(suffix)))
        head = s.completion_token_ids[: at[0]]
        assert not set(head) & eng.eos_ids and prefix + tok.decode(head, skip_special_tokens=True) == s.unforced_completion
        assert [s.behaviour_logprobs[k] for k in at] == [0.0] * len(suffix)
        assert s.completion == s.unforced_completion + forcing_suffix(s.unforced_completion) + "yes</answer>"
        assert s.n_sampled == len(s.completion_token_ids) - len(suffix)
    # every sampled token's behaviour logprob is its logprob given what precedes it, the forced suffix included
    scored = eng.score([s.prompt_token_ids for s in forced], [s.completion_token_ids for s in forced], 1.0)
    for s, lp in zip(forced, scored):
        keep = np.array(s.forced_mask) == 0
        np.testing.assert_allclose(np.array(s.behaviour_logprobs)[keep], np.array(lp)[keep], atol=1e-4)


def test_force_answers_keeps_answered_turns_and_drops_eos(bigram_dir):
    cfg = build_config({}, COT_FORCE + [f"model.path={bigram_dir}", "rollout.torch_threads=1"])
    core = RolloutCore(str(bigram_dir), cfg.model, cfg.rollout)
    eng, tok = core.engine, core.engine.tokenizer
    prompt = _ids(tok, "Question?\n<think>\n")
    eos = tok.eos_token_id
    answered_ids = _ids(tok, "ok</think>\n<answer>no</answer>")
    answered = Generation("ok</think>\n<answer>no</answer>", answered_ids, [-1.0] * len(answered_ids), "stop")
    ended = Generation("GATA1", _ids(tok, "GATA1") + [eos], [-2.0] * (len(_ids(tok, "GATA1")) + 1), "stop")
    closed = Generation("x</think>", _ids(tok, "x</think>"), [-0.5] * len(_ids(tok, "x</think>")), "length")
    turns = force_answers(eng, [prompt], "<think>\n", [[answered, ended, closed]],
                          sampling_from(cfg.rollout, seed=0), answer_tokens=6)
    assert turns[0][0] == Turn.sampled(answered)  # answered: untouched, nothing forced
    t = turns[0][1]  # ended with EOS: EOS dropped, reasoning closed, answer sampled
    n = len(_ids(tok, "GATA1"))
    assert t.token_ids[:n] == _ids(tok, "GATA1") and eos not in t.token_ids[:-1]
    assert t.text == "GATA1\n</think>\n<answer>yes</answer>" and t.unforced_text == "GATA1"
    assert t.forced_mask == [0] * n + [1] * len(_ids(tok, "\n</think>\n<answer>")) + [0] * 4
    assert t.logprobs[:n] == [-2.0] * n and t.finish_reason == "stop"
    t = turns[0][2]  # think already closed: only '<answer>' is inserted
    assert t.text == "x</think>\n<answer>yes</answer>"
    assert sum(t.forced_mask) == len(_ids(tok, "\n<answer>"))


# --------------------------------------------------------------------------- learner


def _forced_batch(tok):
    """Four completions: forced after reasoning, answered on its own, forced right after an
    EOS (no reasoning kept), unanswered and not forced. Returns the samples, and per sample
    the positions of the forced tokens and where its answer word starts (None: no answer)."""
    rng = np.random.default_rng(0)
    p1, p2 = _ids(tok, "Does TP53 knockdown change MYC?\n<think>\n"), _ids(tok, "Does GATA1 change HBG1?\n<think>\n")
    reason, suffix, ans = _ids(tok, "TP53 is a tumour suppressor"), _ids(tok, "\n</think>\n<answer>"), _ids(tok, "yes</answer>")
    own = _ids(tok, "HBG1 is a globin</think>\n<answer>")
    assert own[-3:] == _ids(tok, "<answer>")  # sampled by the policy: its own tag is part of the answer span
    parts = [(p1, reason, suffix, ans, len(reason) + len(suffix)), (p2, own, [], _ids(tok, "no</answer>"), len(own) - 3),
             (p1, [], suffix, _ids(tok, "no</answer>"), len(suffix)), (p2, _ids(tok, "not sure yet"), [], [], None)]
    out, forced_at, answer_at = [], [], []
    for k, (p, r, f, a, start) in enumerate(parts):
        comp = r + f + a
        lp = rng.normal(-2.0, 0.3, len(comp))
        lp[len(r): len(r) + len(f)] = 0.0
        mask = [0] * len(r) + [1] * len(f) + [0] * len(a) if f else []
        out.append(Sample(prompt_id=str(k), prompt="", completion="", prompt_token_ids=list(p),
                          completion_token_ids=comp, behaviour_logprobs=lp.tolist(), forced_mask=mask))
        forced_at.append(list(range(len(r), len(r) + len(f))))
        answer_at.append(start)
    return out, forced_at, answer_at


def test_forced_tokens_get_exactly_zero_gradient(tiny_model_dir):
    """The learner's micro-batch loss on samples with forced tokens equals the loss of the same
    samples with no forced mask and those positions masked by hand (policy gradient, answer
    share, entropy and KL all on), to 1e-6 in loss and every gradient; the behaviour logprobs
    at forced positions are not read at all."""
    cfg = build_config({}, COT_FORCE + ["algorithm.answer_loss_share=0.5", "algorithm.entropy_coef=0.1",
                                        "algorithm.kl_coef=0.1", "learner.shared_prompt=true"])
    model, tok = load_causal_lm(str(tiny_model_dir))
    ref, _ = load_causal_lm(str(tiny_model_dir))
    with torch.no_grad():
        torch.manual_seed(1)
        for p in ref.parameters():
            p.add_(0.02 * torch.randn_like(p))  # a reference that differs: KL > 0
    ref.requires_grad_(False)
    ss, forced_at, answer_at = _forced_batch(tok)
    adv = torch.tensor([0.7, -0.4, 1.1, -0.9])
    w = torch.tensor([1.0, 2.0, 1.0, 1.0])
    total = sum(s.n_sampled * int(wt) for s, wt in zip(ss, w.tolist()))
    assert total == sum((len(s.completion_token_ids) - len(f)) * int(wt) for s, f, wt in zip(ss, forced_at, w.tolist()))

    def grads():
        out = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        return out

    # the learner's path; garbage behaviour logprobs at forced positions must not matter
    noisy = [dataclasses.replace(s, behaviour_logprobs=[-20.0 if m else v for v, m in
                                                        zip(s.behaviour_logprobs, s.forced_mask or [0] * 99)])
             for s in ss]
    loss, st, _, mask = sampled_loss(model, tok, cfg, noisy, adv, w, total, 4, ref=ref)
    loss.backward()
    g_learner = grads()
    # by hand: no forced masks, the completion mask and answer span written out
    plain = [dataclasses.replace(s, forced_mask=[]) for s in ss]
    pids, cids = [s.prompt_token_ids for s in plain], [s.completion_token_ids for s in plain]
    cb = completion_logprobs_shared(model, pids, cids, tok.pad_token_id, 1.0, with_entropy=True, entropy_grad=True)
    hand = torch.zeros_like(cb.mask)
    am = torch.zeros_like(cb.mask)
    for b, s in enumerate(plain):
        hand[b, : len(s.completion_token_ids)] = 1.0
        hand[b, forced_at[b]] = 0.0
        if answer_at[b] is not None:
            am[b, answer_at[b]: len(s.completion_token_ids)] = 1.0
    assert torch.equal(mask, hand)
    with torch.no_grad():
        ref_logp = completion_logprobs_shared(ref, pids, cids, tok.pad_token_id, 1.0).logp
    ac = cfg.algorithm
    loss_h, st_h = policy_loss(cb.logp, old_logprobs(plain, hand.shape[1]), adv, hand, eps_low=ac.eps_low,
                               eps_high=ac.eps_high, total_tokens=total, total_seqs=4, weights=w, answer_mask=am,
                               answer_share=0.5, entropy=cb.entropy, entropy_coef=0.1, ref_logp=ref_logp, kl_coef=0.1)
    loss_h.backward()
    g_hand = grads()
    assert abs(float(loss.detach()) - float(loss_h.detach())) < 1e-6 and abs(float(st["kl"]) - float(st_h["kl"])) < 1e-6
    assert g_learner.keys() == g_hand.keys() and len(g_hand) > 0
    for k in g_hand:
        assert torch.allclose(g_learner[k], g_hand[k], atol=1e-6, rtol=0), k
    # control: without the forced mask the forced tokens would be trained (the test can fail)
    loss_u, *_ = sampled_loss(model, tok, cfg, plain, adv, w, total, 4, ref=ref)
    assert abs(float(loss_u) - float(loss)) > 1e-4


def test_merge_identical_merges_only_equal_forced_masks():
    def s(mask):
        return Sample(prompt_id="0", prompt="", completion="", prompt_token_ids=[1, 2], completion_token_ids=[3, 4, 5],
                      behaviour_logprobs=[-1.0, 0.0, -1.0], forced_mask=mask)

    samples = [s([]), s([0, 0, 0]), s([0, 1, 0]), s([0, 1, 0]), s([1, 1, 0])]
    merged, _, w = merge_identical(samples, np.zeros(5))
    assert w.tolist() == [2.0, 2.0, 1.0]  # none forced (empty = all 0); the same forced mask; another one
    assert [m.forced_mask for m in merged] == [[], [0, 1, 0], [1, 1, 0]]


def test_format_verifier_judges_the_text_before_forcing():
    written = "<think>\nTP53 binds"
    forced = written + forcing_suffix(written) + "yes</answer>"
    s = Sample(prompt_id="0", prompt="", completion=forced, unforced_completion=written)
    own = Sample(prompt_id="1", prompt="", completion=forced)  # the policy wrote it all itself
    scores = FormatVerifier().score([s, own])
    assert scores[0] == format_score(written) == 0.0 and scores[1] == format_score(forced) == 1.0
