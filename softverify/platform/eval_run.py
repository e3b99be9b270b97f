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

from softverify.engines.base import SamplingParams, with_assistant_prefix
from softverify.platform.evaluate import classification_metrics, majority_answers
from softverify.prompts import row_messages
from softverify.verifiers.answer import answer_to_int, parse_answer

FORCE_CLOSE_THINK = "\n</think>\n<answer>"
FORCE_OPEN_ANSWER = "\n<answer>"


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    forced_metrics: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)


def forcing_suffix(text: str) -> str:
    """What to append to an unanswered assistant turn so the next token is the answer."""
    return FORCE_OPEN_ANSWER if "</think>" in text else FORCE_CLOSE_THINK


def forced_choices(engine, prompt_ids: Sequence[Sequence[int]], texts: Sequence[str],
                   completion_ids: Sequence[Sequence[int]]) -> list[tuple[int, float]]:
    """For each unanswered turn: (1 if log p("yes") > log p("no") else 0, that margin).

    The continuation is scored teacher-forced under the engine's current weights; EOS
    tokens the model ended with are dropped first (the turn is re-opened).
    """
    tok = engine.tokenizer
    yes = tok("yes", add_special_tokens=False)["input_ids"]
    no = tok("no", add_special_tokens=False)["input_ids"]
    ctx = []
    for p, t, c in zip(prompt_ids, texts, completion_ids):
        c = list(c)
        while c and c[-1] in engine.eos_ids:
            c.pop()
        ctx.append(list(p) + c + tok(forcing_suffix(t), add_special_tokens=False)["input_ids"])
    if len(yes) == 1 and len(no) == 1:  # one forward pass, last position only
        margins = _next_token_margins(engine, ctx, yes[0], no[0])
    else:
        lp_yes = engine.score(ctx, [yes] * len(ctx), temperature=1.0)
        lp_no = engine.score(ctx, [no] * len(ctx), temperature=1.0)
        margins = [sum(a) - sum(b) for a, b in zip(lp_yes, lp_no)]
    out = [(int(m > 0), float(m)) for m in margins]
    return out


def _next_token_margins(engine, ctx: list[list[int]], yes_id: int, no_id: int) -> list[float]:
    """log p(yes) - log p(no) for the token after each context (left-padded batches)."""
    import torch

    pad = engine.tokenizer.pad_token_id
    margins: list[float] = []
    with torch.no_grad():
        for s in range(0, len(ctx), engine.batch_size):
            part = ctx[s : s + engine.batch_size]
            L = max(len(c) for c in part)
            ids = torch.tensor([[pad] * (L - len(c)) + c for c in part], device=engine.device)
            attn = torch.tensor([[0] * (L - len(c)) + [1] * len(c) for c in part], device=engine.device)
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            logits = engine.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False,
                                  logits_to_keep=1).logits[:, -1].float()
            lp = torch.log_softmax(logits, -1)
            margins.extend((lp[:, yes_id] - lp[:, no_id]).tolist())
    return margins


def run_eval(engine, rows: Sequence[dict], *, max_new_tokens: int, stop: Sequence[str], assistant_prefix: str,
             samples: int = 1, temperature: float = 1.0, seed: int = 0, batch_size: int = 16,
             force_answer: bool = True, progress: bool = True) -> EvalResult:
    """Generate answers for labelled ``rows`` (greedy when ``samples == 1``) and score them."""
    from tqdm import tqdm

    greedy = samples == 1
    sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0 if greedy else temperature,
                        stop=list(stop), seed=seed)
    per_q: list[list[int | None]] = []
    records: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(rows), batch_size), desc="eval", unit="batch", disable=not progress):
        batch = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
        pb = with_assistant_prefix(engine.render([row_messages(r) for r in batch]), engine.tokenizer, assistant_prefix)
        gens = engine.generate(pb.token_ids, sp, n=samples)
        ans_batch = []
        for r, gs in zip(batch, gens):
            ans = [answer_to_int(parse_answer(assistant_prefix + g.text)) for g in gs]
            ans_batch.append(ans)
            per_q.append(ans)
            records.append({"prompt_id": r.get("prompt_id"), "label": int(r["label"]), "answers": ans,
                            "completion": assistant_prefix + gs[0].text})
        if force_answer and greedy:
            todo = [i for i, a in enumerate(ans_batch) if a[0] is None]
            choices = forced_choices(engine, [pb.token_ids[i] for i in todo],
                                     [assistant_prefix + gens[i][0].text for i in todo],
                                     [gens[i][0].token_ids for i in todo]) if todo else []
            by_i = dict(zip(todo, choices))
            for i in todo:
                rec = records[len(records) - len(ans_batch) + i]
                rec["forced_answer"], rec["forced_margin"] = by_i[i]
    if greedy:
        metrics, forced_metrics = metrics_from_records(records)
        return EvalResult(metrics, forced_metrics, records)
    labels = [r["label"] for r in records]
    return EvalResult(classification_metrics(labels, majority_answers(per_q)), None, records)


def metrics_from_records(records: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Free and forced metrics of greedy records (forced is None when nothing was forced)."""
    labels = [r["label"] for r in records]
    free = [r["answers"][0] for r in records]
    if not any("forced_answer" in r for r in records) and any(a is None for a in free):
        return classification_metrics(labels, free), None
    forced = [r.get("forced_answer", a) for r, a in zip(records, free)]
    return classification_metrics(labels, free), classification_metrics(labels, forced)
