"""What a run shows at its end: the closing summary ``softverify train`` prints and the model
card written into ``final/README.md``.

Both read the run's ``metrics.jsonl`` (every step, resumed ones included), so they say what
the whole run did, not what the last process saw. The headline is PerturbQA's per-gene AUROC
of the forced score (``eval_forced/auc_per_gene``, the only number that says whether a model
knows anything about knockdowns) with its interval over genes, beside the pooled AUROC; the
best eval is ranked by the headline (pooled AUROC when the eval has no per-gene metric).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

#: the headline eval metric and the pooled one beside it (each with ``_lo``/``_hi``)
HEADLINE = "eval_forced/auc_per_gene"
POOLED = "eval_forced/auroc"
#: the Hugging Face id of the embedded default policy (``model.path: smollm2``)
EMBEDDED_BASE = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _eval_view(row: dict[str, Any]) -> dict[str, Any]:
    """One eval row's headline numbers: step, per-gene AUROC with interval and gene count,
    pooled AUROC with interval (None where absent)."""
    out: dict[str, Any] = {"step": int(row["step"])}
    for key, short in ((HEADLINE, "auc_per_gene"), (POOLED, "auroc")):
        out[short] = _num(row.get(key))
        out[short + "_lo"] = _num(row.get(key + "_lo"))
        out[short + "_hi"] = _num(row.get(key + "_hi"))
    genes = row.get(HEADLINE + "_genes")
    out["genes"] = int(genes) if _num(genes) is not None else None
    return out


def run_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run in a few numbers: steps logged, questions trained (summed over every step,
    so a resumed run counts its earlier process too), and the final and best periodic eval
    (``None`` when no step was evaluated; best = highest per-gene AUROC, else pooled)."""
    evals = [_eval_view(r) for r in rows if _num(r.get(HEADLINE)) is not None or _num(r.get(POOLED)) is not None]
    rank_by = "auc_per_gene" if any(e["auc_per_gene"] is not None for e in evals) else "auroc"
    ranked = [e for e in evals if e[rank_by] is not None]
    best = max(ranked, key=lambda e: (e[rank_by], -e["step"])) if ranked else None  # earliest of equals
    return {
        "steps": int(rows[-1]["step"]) if rows else 0,
        "questions_trained": int(sum(r.get("questions_trained") or 0 for r in rows)),
        "final_eval": evals[-1] if evals else None,
        "best_eval": best,
        "best_by": rank_by,
        "evals": len(evals),
    }


def _interval(v: float | None, lo: float | None, hi: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")


def describe_eval(e: dict[str, Any]) -> str:
    """``auc_per_gene 0.512 [0.470, 0.553] over 64 genes, pooled AUROC 0.640 [0.59, 0.69]``."""
    parts = []
    if e["auc_per_gene"] is not None:
        genes = f" over {e['genes']} genes" if e["genes"] is not None else ""
        parts.append(f"auc_per_gene {_interval(e['auc_per_gene'], e['auc_per_gene_lo'], e['auc_per_gene_hi'])}{genes}")
    if e["auroc"] is not None:
        parts.append(f"pooled AUROC {_interval(e['auroc'], e['auroc_lo'], e['auroc_hi'])}")
    return ", ".join(parts)


def format_summary(s: dict[str, Any], out_dir: Path, final: Path, eval_every: int) -> str:
    """The closing lines of ``softverify train``: the evals, then where everything is."""
    lines = [f"run summary: {s['steps']} steps, {s['questions_trained']:,} questions trained"]
    fe, be = s["final_eval"], s["best_eval"]
    if fe is None:
        why = ("trainer.eval_every=0" if not eval_every
               else f"trainer.eval_every={eval_every} is more than the {s['steps']} steps run")
        lines.append(f"  no periodic eval was logged ({why}); score the model with `softverify eval {final}`")
    else:
        lines.append(f"  final eval (step {fe['step']}): {describe_eval(fe)}")
        if be is not None and s["evals"] > 1:
            by = "auc_per_gene" if s["best_by"] == "auc_per_gene" else "pooled AUROC"
            lines.append(f"  best eval  (step {be['step']}, by {by}): {describe_eval(be)}")
    lines.append(f"final model: {final} (model card: {final / 'README.md'})")
    lines.append(f"metrics: {out_dir / 'metrics.jsonl'}  plot: {out_dir / 'metrics.png'}")
    return "\n".join(lines)


def base_model_id(model_path: str) -> str:
    """The base model as a card names it: the embedded default's Hugging Face id, else the
    configured path or id as given."""
    return EMBEDDED_BASE.get(str(model_path), str(model_path))


def model_card(cfg, s: dict[str, Any], run_name: str) -> str:
    """``final/README.md``: Hugging Face model-card YAML front matter (``base_model``,
    ``library_name: softverify``, tags, and a ``softverify`` block with the data, verifiers,
    training and eval) and a short body saying the same for a reader."""
    from softverify.task.prompts import PROMPT_FILE

    d = cfg.data
    data: dict[str, Any] = {"source": d.source, "split": d.split, "eval_split": d.eval_split}
    if d.source == "perturbqa":
        data["cell_lines"] = list(d.cell_lines)
    else:
        data["path"] = d.path
    verifiers = [{"name": v.display_name, "kind": v.kind, "weight": v.weight, "threshold": v.threshold,
                  **({"params": dict(v.params)} if v.params else {})} for v in cfg.verifiers]
    training = {"steps": s["steps"], "questions_trained": s["questions_trained"], "prompt_style": cfg.prompt.style,
                "estimator": cfg.algorithm.estimator, "prompts_per_step": cfg.rollout.prompts_per_step,
                "group_size": cfg.rollout.group_size, "lr": cfg.learner.lr}
    meta: dict[str, Any] = {
        "base_model": base_model_id(cfg.model.path),
        "library_name": "softverify",
        "pipeline_tag": "text-generation",
        "tags": ["softverify", "grpo", "reinforcement-learning", f"{cfg.prompt.style}-style"]
        + sorted({v.kind for v in cfg.verifiers}),
        # through JSON (unknown objects as text): a numpy number or a Path in a verifier's params
        # must not stop the card from being written at the very end of a run
        "softverify": json.loads(json.dumps({"data": data, "verifiers": verifiers, "training": training,
                                             "final_eval": s["final_eval"], "best_eval": s["best_eval"]},
                                            default=lambda o: o.item() if hasattr(o, "item") else str(o))),
    }
    body = [f"# {run_name}", "",
            f"A policy trained with softverify (GRPO against verifiers, on Ray) from `{meta['base_model']}` on "
            f"{_data_text(data)}, {s['steps']} steps ({s['questions_trained']:,} questions trained, "
            f"{cfg.prompt.style} prompt style, `{cfg.algorithm.estimator}` estimator).", "",
            "## Verifiers", "", "| name | kind | weight | threshold |", "| --- | --- | --- | --- |"]
    body += [f"| {v['name']} | {v['kind']} | {v['weight']:g} | {'-' if v['threshold'] is None else v['threshold']} |"
             for v in verifiers]
    body += ["", "## Evaluation", ""]
    if s["final_eval"] is None:
        body.append("No periodic eval was logged in this run; `softverify eval` scores the model.")
    else:
        body.append(f"Forced-score reading on the `{d.eval_split}` split (95% bootstrap intervals; per-gene "
                    "AUROC is PerturbQA's `auc_per_gene`, the interval over genes).")
        body.append("")
        body.append(f"- final (step {s['final_eval']['step']}): {describe_eval(s['final_eval'])}")
        if s["best_eval"] is not None and s["evals"] > 1:
            body.append(f"- best (step {s['best_eval']['step']}): {describe_eval(s['best_eval'])}")
    body += ["", "## Use", "", "```bash", "softverify serve <this directory>      # OpenAI-compatible API",
             "softverify eval <this directory> --protocol perturbqa", "```", "",
             f"`{PROMPT_FILE}` beside the weights records how the policy was prompted; serve and eval ask it "
             "the same way. The run's full config is `config.yaml` in its output directory.", ""]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(body)


def _data_text(data: dict[str, Any]) -> str:
    if data["source"] == "perturbqa":
        return f"PerturbQA {'/'.join(c.upper() for c in data['cell_lines'])} questions (split `{data['split']}`)"
    return f"the prompts of `{data['path']}` (split `{data['split']}`)"
