"""The eval runner: forced answers read the model's own yes/no preference."""
import pytest

from softverify.engines.hf import HFEngine
from softverify.evaluation.run import _next_token_margins, run_eval
from softverify.task.answer import forcing_suffix


def test_forcing_suffix_closes_open_reasoning():
    assert forcing_suffix("<think>\nno") == "\n</think>\n<answer>"
    assert forcing_suffix("<think>x</think>") == "\n<answer>"


def test_single_pass_margin_equals_teacher_forced_scores(tiny_model_dir):
    e = HFEngine(str(tiny_model_dir), torch_threads=1, batch_size=4)
    ctx = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]  # ragged: exercises left padding
    fast = _next_token_margins(e, ctx, [30], [31])
    ref = [a[0] - b[0] for a, b in zip(e.score(ctx, [[30]] * 3), e.score(ctx, [[31]] * 3))]
    assert fast == pytest.approx(ref, abs=1e-4)


def test_run_eval_free_and_forced_readings(tiny_model_dir):
    e = HFEngine(str(tiny_model_dir), torch_threads=1, batch_size=4, decode="loop")
    rows = [{"question": f"Is a knockdown of GENE{i} in K562 cells likely to result in differential expression of X?",
             "label": i % 2, "prompt_id": i} for i in range(6)]
    res = run_eval(e, rows, max_new_tokens=4, stop=["</answer>"], assistant_prefix="<think>\n", batch_size=4,
                   progress=False)
    assert res.metrics["n"] == 6 and res.forced_metrics["n"] == 6
    # a 4-token random model never writes the tags: all unanswered, each forced to a choice
    assert res.metrics["unanswered_rate"] == 1.0 and res.forced_metrics["unanswered_rate"] == 0.0
    assert all(r["forced_answer"] in (0, 1) and r["forced_answer"] == int(r["margin"] > 0) for r in res.records)
    assert [r["prompt_id"] for r in res.records] == list(range(6))


def test_direct_style_scores_every_question_at_the_answer_position(tiny_model_dir):
    """Direct style: the prompt ends with '<answer>', so every record's margin is the
    next-token yes/no margin right after the prompt, answered or not."""
    from softverify.engines.base import with_assistant_prefix
    from softverify.evaluation.run import answer_margins
    from softverify.task.prompts import DIRECT_SYSTEM_PROMPT, row_messages

    e = HFEngine(str(tiny_model_dir), torch_threads=1, batch_size=4, decode="loop")
    rows = [{"question": f"Does knockdown of G{i} change X?", "label": i % 2, "prompt_id": i} for i in range(4)]
    res = run_eval(e, rows, max_new_tokens=4, stop=["</answer>"], assistant_prefix="<answer>", batch_size=4,
                   progress=False, system_prompt=DIRECT_SYSTEM_PROMPT)
    pb = with_assistant_prefix(e.render([row_messages(r, DIRECT_SYSTEM_PROMPT) for r in rows]), e.tokenizer, "<answer>")
    want = answer_margins(e, pb.token_ids)
    assert [r["margin"] for r in res.records] == pytest.approx(want, abs=1e-5)
    assert {"auroc", "auprc", "auroc_lo", "auroc_hi"} <= set(res.forced_metrics)


def test_score_only_eval_gives_the_generating_evals_margins_without_generating(tiny_model_dir):
    from softverify.task.prompts import DIRECT_SYSTEM_PROMPT

    e = HFEngine(str(tiny_model_dir), torch_threads=1, batch_size=4, decode="loop")
    rows = [{"question": f"Does knockdown of G{i} change X{i % 3}?", "label": i % 2, "prompt_id": i, "gene": f"X{i % 3}"}
            for i in range(9)]
    kw = dict(max_new_tokens=4, stop=["</answer>"], assistant_prefix="<answer>", batch_size=4, progress=False,
              system_prompt=DIRECT_SYSTEM_PROMPT)
    gen = run_eval(e, rows, **kw)
    calls = []
    e.generate = lambda *a, **k: calls.append(a)  # noqa: E731  (must not be called)
    sc = run_eval(e, rows, score_only=True, **kw)
    assert not calls
    assert [r["margin"] for r in sc.records] == pytest.approx([r["margin"] for r in gen.records], abs=1e-5)
    assert all(r["answers"] == [int(r["margin"] > 0)] for r in sc.records)
    assert sc.metrics["unanswered_rate"] == 0.0 and sc.forced_metrics["auroc"] == pytest.approx(gen.forced_metrics["auroc"])
    assert sc.forced_metrics["auc_per_gene_genes"] == gen.forced_metrics["auc_per_gene_genes"]
    with pytest.raises(ValueError, match="score-only eval needs a prompt that ends at the answer"):
        run_eval(e, rows, score_only=True, **{**kw, "assistant_prefix": "<think>\n"})
