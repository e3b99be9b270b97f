"""Answer held-out questions with a model and score the answers (``softverify eval``, the
science ladder in ``benchmarks/``).

Two readings of the same generations are reported:

- **free**: the answer the model wrote in ``<answer>`` tags; no tag = unanswered, which
  ``classification_metrics`` counts as wrong. This is what a user of the model gets.
- **forced** (``force_answer=True``): where the model left the question unanswered, its
  reasoning is closed for it (``</think>`` then ``<answer>``) and the answer is whichever
  of "yes"/"no" it finds more likely. Small models often know the answer before they
  learn the format (SmolLM2-135M writes "no" inside ``<think>`` and stops), so this
  separates "what the policy believes" from "whether it follows the layout". Greedy
  answers only (with ``samples > 1`` the forced reading is skipped).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from softverify.engines.base import SamplingParams, render_rows
from softverify.evaluation.classification import classification_metrics, majority_answers
from softverify.task.answer import ANSWER_RE, answer_to_int, forced_turn_tokens, parse_answer


#: Row fields a record keeps: what the per-gene metric and the lookups need.
RECORD_KEYS = ("pert", "gene", "cell_line", "negated")


def _record(row: dict, answers: list, completion: str | None) -> dict[str, Any]:
    """One eval record: the row's id, label and :data:`RECORD_KEYS`, and the answers read."""
    return {"prompt_id": row.get("prompt_id"), "label": int(row["label"]), "answers": answers,
            "completion": completion, **{k: row[k] for k in RECORD_KEYS if row.get(k) is not None}}


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    forced_metrics: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)


def answer_contexts(engine, prompt_ids: Sequence[Sequence[int]], prefix: str, gen_texts: Sequence[str],
                    gen_ids: Sequence[Sequence[int]]) -> list[list[int]]:
    """Token ids that end exactly where the answer word goes, one per generation.

    - answered: the prompt plus the generated text up to the last answer's word (in the
      direct style that is the prompt itself: it already ends with ``<answer>``);
    - unanswered, direct style: the prompt (the answer position is right after it);
    - unanswered, CoT: the turn re-opened (trailing EOS dropped) and closed for it with
      ``</think>`` ``<answer>`` (see :func:`forced_turn_tokens`; training's
      ``rollout.force_answer`` continues the same contexts by sampling).
    """
    tok = engine.tokenizer
    out = []
    for p, t, c in zip(prompt_ids, gen_texts, gen_ids):
        full = prefix + t
        found = list(ANSWER_RE.finditer(full))
        if found:
            rel = found[-1].start(1) - len(prefix)
            out.append(list(p) + (tok(t[:rel], add_special_tokens=False)["input_ids"] if rel > 0 else []))
        elif "<answer>" in prefix:
            out.append(list(p))
        else:
            kept, suffix = forced_turn_tokens(tok, engine.eos_ids, full, c)
            out.append(list(p) + kept + suffix)
    return out


def _answer_ids(tok, word: str) -> list[list[int]]:
    """Token ids of an answer word in the spellings the parser accepts ("yes", "Yes")."""
    return [tok(w, add_special_tokens=False)["input_ids"] for w in dict.fromkeys((word, word.capitalize()))]


def answer_margins(engine, contexts: Sequence[Sequence[int]]) -> list[float]:
    """log p(yes) - log p(no) for the token after each context under the engine's current
    weights, each side summed over the spellings the answer parser accepts ("yes"/"Yes":
    the parser is case-insensitive, so a policy that writes "No" means no)."""
    tok = engine.tokenizer
    yes, no = _answer_ids(tok, "yes"), _answer_ids(tok, "no")
    ctx = [list(c) for c in contexts]
    if all(len(t) == 1 for t in yes + no):  # one forward pass, last position only
        return _next_token_margins(engine, ctx, [t[0] for t in yes], [t[0] for t in no])
    import numpy as np

    def logp(variants):
        per = [[sum(x) for x in engine.score(ctx, [v] * len(ctx), temperature=1.0)] for v in variants]
        return np.logaddexp.reduce(np.array(per), axis=0)

    return (logp(yes) - logp(no)).tolist()


def _next_token_margins(engine, ctx: list[list[int]], yes_id: list[int], no_id: list[int]) -> list[float]:
    """log p(yes) - log p(no) for the token after each context; ``yes_id`` / ``no_id``: the
    token ids of each answer's spellings (their probabilities summed)."""
    import numpy as np

    lp = np.array(engine.next_token_logprobs(ctx, list(yes_id) + list(no_id)), dtype=np.float64)
    k = len(yes_id)
    return (np.logaddexp.reduce(lp[:, :k], axis=1) - np.logaddexp.reduce(lp[:, k:], axis=1)).tolist()


def run_eval(engine, rows: Sequence[dict], *, max_new_tokens: int, stop: Sequence[str], assistant_prefix: str,
             samples: int = 1, temperature: float = 1.0, seed: int = 0, batch_size: int = 16,
             force_answer: bool = True, progress: bool = True, system_prompt: str | None = None,
             score_only: bool = False) -> EvalResult:
    """Generate answers for labelled ``rows`` (greedy when ``samples == 1``) and score them.

    With ``force_answer`` (greedy only) every record also gets ``margin``, the forced score
    log p(yes) - log p(no) at its answer position, and unanswered ones a ``forced_answer``.
    ``score_only`` (a prompt that already ends at the answer position, the direct style):
    no generation, one forward per question (see :func:`_score_eval`)."""
    from tqdm import tqdm

    if score_only:
        return _score_eval(engine, rows, assistant_prefix, batch_size, progress, system_prompt)
    greedy = samples == 1
    sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0 if greedy else temperature,
                        stop=list(stop), seed=seed)
    per_q: list[list[int | None]] = []
    records: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(rows), batch_size), desc="eval", unit="batch", disable=not progress):
        batch = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
        pb = render_rows(engine, batch, system_prompt, assistant_prefix)
        gens = engine.generate(pb.token_ids, sp, n=samples)
        first = len(records)
        for r, gs in zip(batch, gens):
            ans = [answer_to_int(parse_answer(assistant_prefix + g.text)) for g in gs]
            per_q.append(ans)
            records.append(_record(r, ans, assistant_prefix + gs[0].text))
        if force_answer and greedy:
            ctx = answer_contexts(engine, pb.token_ids, assistant_prefix, [g[0].text for g in gens],
                                  [g[0].token_ids for g in gens])
            for rec, m in zip(records[first:], answer_margins(engine, ctx)):
                rec["margin"] = float(m)
                if rec["answers"][0] is None:
                    rec["forced_answer"] = int(m > 0)
    if greedy:
        metrics, forced_metrics = metrics_from_records(records)
        return EvalResult(metrics, forced_metrics, records)
    labels = [r["label"] for r in records]
    return EvalResult(classification_metrics(labels, majority_answers(per_q)), None, records)


def _score_eval(engine, rows: Sequence[dict], assistant_prefix: str, batch_size: int, progress: bool,
                system_prompt: str | None) -> EvalResult:
    """Eval as scoring: where the prompt ends at the answer position (``<answer>`` in the
    assistant prefix) the forced score needs one forward per question and no generation.
    Each record's answer is the likelier of yes/no (so the free and forced readings
    coincide, and no answer is left unparsed: a policy that would write neither word is
    read by its yes/no preference)."""
    from tqdm import tqdm

    if "<answer>" not in assistant_prefix:
        raise ValueError(f"score-only eval needs a prompt that ends at the answer (assistant prefix with "
                         f"'<answer>', the direct style); got assistant prefix {assistant_prefix!r}")
    records: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(rows), batch_size), desc="eval", unit="batch", disable=not progress):
        batch = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
        pb = render_rows(engine, batch, system_prompt, assistant_prefix)
        for r, m in zip(batch, answer_margins(engine, [list(p) for p in pb.token_ids])):
            records.append({**_record(r, [int(m > 0)], None), "margin": float(m)})
    free, forced = metrics_from_records(records)
    return EvalResult(free, forced, records)


def metrics_from_records(records: Sequence[dict[str, Any]], n_boot: int = 1000) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Free and forced metrics of greedy records. Forced = the forced yes/no reading plus,
    where records carry ``margin``, the score's AUROC/AUPRC with bootstrap intervals (and
    its Spearman correlation with ``wm_p`` where records carry the world model's p).
    None when no record was forced or scored."""
    from softverify.evaluation.scores import score_metrics

    labels = [r["label"] for r in records]
    free = [r["answers"][0] for r in records]
    free_m = classification_metrics(labels, free)
    scored = bool(records) and all("margin" in r for r in records)
    if not scored and not any("forced_answer" in r for r in records) and any(a is None for a in free):
        return free_m, None
    forced = [r.get("forced_answer", a) for r, a in zip(records, free)]
    forced_m = classification_metrics(labels, forced)
    if scored:
        ref = [r.get("wm_p", float("nan")) for r in records] if any("wm_p" in r for r in records) else None
        forced_m.update(score_metrics(labels, [r["margin"] for r in records],
                                      answers=[int(bool(a)) for a in forced], reference=ref, n_boot=n_boot))
        if all("gene" in r for r in records):
            forced_m.update(per_gene_metrics(records, n_boot=n_boot))
    return free_m, forced_m


def de_orientation(records: Sequence[dict[str, Any]]) -> tuple[Any, Any, Any]:
    """Which records are negated, and their DE label and DE score (margin for "yes,
    differentially expressed"): a negated question ("... unchanged?") flips both."""
    import numpy as np

    neg = np.array([bool(r.get("negated", False)) for r in records])
    y = np.array([int(r["label"]) for r in records])
    m = np.array([float(r["margin"]) for r in records])
    return neg, np.where(neg, 1 - y, y), np.where(neg, -m, m)


def per_gene_metrics(records: Sequence[dict[str, Any]], n_boot: int = 1000) -> dict[str, float]:
    """PerturbQA's ``auc_per_gene`` of the forced score (interval over genes), on DE-oriented
    labels and scores; with ``wm_p`` on the records, the teacher's on the same rows and the
    student's per-gene Spearman agreement with it (the Goodhart monitor's two curves)."""
    import numpy as np

    from softverify.metrics.ranking import auc_per_gene

    neg, y, s = de_orientation(records)
    genes = [str(r["gene"]) for r in records]
    out = auc_per_gene(genes, y, s, n_boot=n_boot).as_dict()
    if any("wm_p" in r for r in records):
        p = np.array([float(r.get("wm_p", float("nan"))) for r in records])
        p_de = np.where(neg, 1 - p, p)  # wm_p is the p of the answer "yes" to the question as asked
        out.update(auc_per_gene(genes, y, p_de, n_boot=n_boot).as_dict("teacher_auc_per_gene"))
        out["teacher_agreement_per_gene"] = float(np.nanmean(list(_gene_spearman(genes, s, p_de).values())
                                                              or [np.nan]))
    return out


def _gene_spearman(genes: Sequence[str], a, b) -> dict[str, float]:
    """Spearman correlation of ``a`` and ``b`` within each gene with >= 3 finite rows and
    variation in both."""
    import numpy as np
    from scipy.stats import spearmanr

    g = np.asarray(genes)
    out: dict[str, float] = {}
    for gene in np.unique(g):
        m = (g == gene) & np.isfinite(a) & np.isfinite(b)
        if m.sum() >= 3 and np.ptp(a[m]) > 0 and np.ptp(b[m]) > 0:
            out[str(gene)] = float(spearmanr(a[m], b[m]).statistic)
    return out
