"""GO knowledge verifiers on the real NCBI gene2go / GO OBO files."""
from __future__ import annotations

import math

import numpy as np
import pytest
from _vtools import completion, nan_equal, sample
from rouge_score import rouge_scorer

from softverify.verifiers import build_verifier
from softverify.verifiers.knowledge import VARIANTS, Reference, lcs_length, rouge, tokens
from softverify.verifiers.textparts import reasoning_text

TP53_RIGHT = ("TP53 is a transcription factor that drives apoptotic process and cell cycle arrest after DNA damage; "
              "it binds DNA and regulates the intrinsic apoptotic signaling pathway.")
TP53_WRONG = "TP53 is a structural constituent of the ribosome and an olfactory receptor in the cilium of neurons."


@pytest.fixture(scope="module")
def rouge_v(kb_params):
    return build_verifier("go_rouge", keys=["pert"], **kb_params)


def test_reasoning_sections():
    assert reasoning_text("<think>a</think><gene_info>b</gene_info><answer>yes</answer>") == "b"
    assert reasoning_text("<think> a b </think><answer>yes</answer>") == "a b"
    assert reasoning_text("<think> unclosed <answer>no</answer>") == "unclosed"
    assert reasoning_text("plain text <answer>no</answer>") == "plain text"


def test_rouge_matches_rouge_score_on_go_text(rouge_v):
    sc = rouge_scorer.RougeScorer(list(VARIANTS), use_stemmer=True)
    for gene, pred in [("TP53", TP53_RIGHT), ("TP53", TP53_WRONG), ("GATA1", TP53_RIGHT), ("MYC", ""),
                       ("MYC", "MYC MYC MYC regulation regulation of transcription by RNA polymerase II")]:
        ref_text = rouge_v.go.text(gene)
        assert ref_text.count(";") >= 5, gene
        exp = sc.score(ref_text, pred)
        got = rouge(tokens(pred), Reference(ref_text))
        for v in VARIANTS:
            assert got[v] == pytest.approx((exp[v].precision, exp[v].recall, exp[v].fmeasure), abs=1e-12), (gene, v)


def test_lcs_bit_parallel_against_table():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = [str(x) for x in rng.integers(0, 6, rng.integers(0, 30))]
        b = [str(x) for x in rng.integers(0, 6, rng.integers(1, 90))]
        table = rouge_scorer._lcs_table(b, a)
        assert lcs_length(a, Reference(" ".join(b)).masks, len(b)) == table[-1][-1]


def test_go_rouge_hand_checked(rouge_v, kb_params):
    s = rouge_v.score([
        sample(completion("yes", TP53_RIGHT), pert="TP53"), sample(completion("yes", TP53_WRONG), pert="TP53"),
        sample("<answer>yes</answer>", pert="TP53"),                 # nothing stated: 0
        sample(completion("yes", TP53_RIGHT), pert="NOT_A_GENE_XYZ"),  # unknown gene: abstain
    ])
    assert s[0] > 2 * s[1] > 0 and s[2] == 0.0 and np.isnan(s[3]), s
    prec = build_verifier("go_rouge", keys=["pert"], variant="rouge1", measure="precision", **kb_params)
    p_right, p_wrong = prec.score([sample(completion("yes", TP53_RIGHT), pert="TP53"),
                                   sample(completion("yes", TP53_WRONG), pert="TP53")])
    # half the right statement's 26 tokens are TP53 GO words (hand-counted); few of the wrong one's
    assert p_right == pytest.approx(0.5) and p_wrong < 0.3


def test_go_keywords_hand_checked(kb_params):
    v = build_verifier("go_keywords", keys=["pert"], target=3, **kb_params)
    kw = v.keywords(["TP53"])
    assert {"apoptot", "arrest"} <= kw and "regul" not in kw and "process" not in kw
    s = v.score([
        sample(completion("no", TP53_RIGHT), pert="TP53"), sample(completion("no", TP53_WRONG), pert="TP53"),
        sample(completion("no", "apoptotic arrest"), pert="TP53"), sample(completion("no", "x"), pert="NOPE_XYZ"),
    ])
    assert s[0] == 1.0 and s[1] < 0.5 and s[2] == pytest.approx(2 / 3) and np.isnan(s[3]), s


def test_go_likelihood_exact_with_known_logprobs(kb_params):
    v = build_verifier("go_likelihood", n_terms=2, **kb_params)
    assert v.needs_policy
    sent = v.sentence("TP53")
    terms = v.go.terms("TP53")[:2]
    assert sent == f"\nIn summary, TP53 is involved in {terms[0]} and {terms[1]}."
    seen = {}

    def logprob_fn(ctx, cont):
        seen["ctx"], seen["cont"] = ctx, cont
        return [[-1.0, -3.0] for _ in cont]

    encode = lambda t: [len(w) for w in t.split()]  # noqa: E731  (a toy tokenizer: word lengths)
    samples = [sample("<think>\nabout TP53\n</think><answer>yes</answer>", pert="TP53"),
               sample("<answer>yes</answer>", pert="NOPE_XYZ")]
    for s in samples:
        s.prompt, s.prompt_token_ids = "<|im_start|>assistant\n<think>\n", [7, 8]
    out = v.score_with(samples, logprob_fn, encode)
    assert out[0] == pytest.approx(math.exp(-2.0)) and np.isnan(out[1])
    assert seen["ctx"] == [[7, 8, 5, 4]] and seen["cont"] == [encode(sent)]  # prompt + "about TP53"
    with pytest.raises(RuntimeError, match="current policy"):
        v.score(samples)


def test_suite_routes_policy_verifiers_to_its_policy(kb_params):
    """One VerifierSuite hosts plain and policy-scored verifiers; the latter get the
    suite's PolicyScorer, and without one the suite names them."""
    from softverify.config import VerifierSpec
    from softverify.verifiers.suite import VerifierSuite

    class ToyPolicy:
        def logprobs(self, ctx, cont):
            return [np.full(len(c), -0.5) for c in cont]

        def encode(self, text):
            return [len(w) for w in text.split()]

    specs = [VerifierSpec(kind="go_likelihood", params={**kb_params, "n_terms": 2}), VerifierSpec(kind="hard")]
    samples = [sample("<think>\nabout TP53\n</think><answer>yes</answer>", pert="TP53", label=1)]
    samples[0].prompt, samples[0].prompt_token_ids = "<|im_start|>assistant\n", [7, 8]
    suite = VerifierSuite(specs, policy=ToyPolicy())
    assert suite.policy_names == ["go_likelihood"]
    got = suite.score(samples)
    want = build_verifier("go_likelihood", n_terms=2, **kb_params).score_with(samples, ToyPolicy().logprobs,
                                                                             ToyPolicy().encode)
    assert got[0, 0] == pytest.approx(want[0]) == pytest.approx(math.exp(-0.5)) and got[0, 1] == 1.0
    assert VerifierSuite(specs).score(samples, ["hard"])[0, 0] == 1.0  # plain verifiers need no policy
    with pytest.raises(ValueError, match=r"\['go_likelihood'\] need the policy's logprobs"):
        VerifierSuite(specs).score(samples)


def test_go_likelihood_with_a_real_policy(kb_params, tiny_model_dir):
    """Through RolloutCore.score_policy_verifier: same numbers as the engine's own scoring."""
    from softverify.actors.rollout import RolloutCore
    from softverify.config import ModelConfig, RolloutConfig, VerifierSpec

    core = RolloutCore(str(tiny_model_dir), ModelConfig(path=str(tiny_model_dir)), RolloutConfig(max_new_tokens=4))
    rows = [{"question": "Is a knockdown of TP53 in K562 cells likely to result in differential expression of MYC?",
             "pert": "TP53", "gene": "MYC", "label": 1}]
    from softverify.engines.base import SamplingParams

    samples = core.generate(rows, 2, SamplingParams(max_new_tokens=6, seed=0))
    spec = VerifierSpec(kind="go_likelihood", params=kb_params)
    got = core.score_policy_verifier(spec, samples)
    v = build_verifier("go_likelihood", **kb_params)
    tok = core.engine.tokenizer
    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    want = v.score_with(samples, lambda p, c: core.engine.score(p, c, 1.0), enc)
    assert nan_equal(got, want) and ((got > 0) & (got < 1)).all()
    # a random tiny model is far from certain about a GO sentence
    assert got.max() < 0.05
