"""Verifier throughput: samples/s of every verifier on 10k realistic samples (CPU).

Samples are K562 test questions (real pert, gene, label) grouped like GRPO (``--group``
completions per prompt) with completions whose reasoning states the GO facts of the
perturbed gene, of a random other gene, or nothing, and answers yes / no / malformed.
Co-expression is scored on co-expression questions from the matrix. Each verifier is
built first (not timed), then one cold ``score`` call on all samples is timed (memo
caches start empty), best of ``--repeats`` fresh builds. ``go_likelihood`` runs a policy
forward per sample; it is timed on ``--policy-samples`` samples with ``--policy``.

    python benchmarks/verifier_throughput.py --world-model runs/assets/wm_go64 \\
        --kb runs/assets/kb --matrix runs/assets/coexpr_pbmc68k_npmi.npz [--policy smollm2]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from softverify.config import VerifierSpec
from softverify.types import Sample
from softverify.verifiers.base import build_from_spec

ROOT = Path(__file__).resolve().parents[1]


def make_samples(rows, go, rng, group: int) -> list[Sample]:
    """``rows``: (pert, gene, label, task) tuples; ``group`` completions each."""
    out = []
    all_genes = [r[0] for r in rows]
    for i, (pert, gene, label, task) in enumerate(rows):
        for _ in range(group):
            kind = rng.choice(["right", "wrong", "none"], p=[0.5, 0.35, 0.15])
            src = pert if kind == "right" else all_genes[rng.integers(len(all_genes))]
            terms = go.terms(src)[:8] if kind != "none" else []
            facts = f"{pert} is involved in " + ", ".join(terms) + "." if terms else "I do not know this gene."
            think = f"Knocking down {pert} in K562 cells. {facts} Whether {gene} responds depends on the pathway."
            ans = rng.choice(["yes", "no", None], p=[0.45, 0.45, 0.1])
            tail = f"<answer>\n{ans}\n</answer>" if ans else "<answer>maybe</answer>"
            out.append(Sample(prompt_id=f"q{i}", prompt="", completion=f"<think>\n{think}\n</think>\n{tail}",
                              metadata={"pert": pert, "gene": gene, "label": int(label), "task": task,
                                        "negated": False}, group=i))
    return out


def time_verifier(spec: VerifierSpec, samples, repeats: int, policy=None) -> dict:
    """Best of ``repeats`` fresh builds: ``cold`` = first call (caches empty), ``warm`` =
    a second call on the same instance (what a pool actor sees from step 2 on)."""
    cold, warm, col = float("inf"), float("inf"), None
    cold_cpu, warm_cpu = float("inf"), float("inf")
    build_s = 0.0

    def call(v):
        if v.needs_policy:
            tok = policy.tokenizer
            return v.score_with(samples, lambda p, c: policy.score(p, c, 1.0),
                                lambda x: tok(x, add_special_tokens=False)["input_ids"])
        return v.score(samples)

    for _ in range(repeats):
        t = time.perf_counter()
        v = build_from_spec(spec)
        build_s = time.perf_counter() - t
        t, c = time.perf_counter(), time.process_time()
        col = call(v)
        cold, cold_cpu = min(cold, time.perf_counter() - t), min(cold_cpu, time.process_time() - c)
        if not v.needs_policy:
            t, c = time.perf_counter(), time.process_time()
            call(v)
            warm, warm_cpu = min(warm, time.perf_counter() - t), min(warm_cpu, time.process_time() - c)
    ok = ~np.isnan(col)
    warm = cold if warm == float("inf") else warm
    warm_cpu = cold_cpu if warm_cpu == float("inf") else warm_cpu
    n = len(samples)
    return {"verifier": spec.display_name, "kind": spec.kind, "n": n, "cold_s": cold, "warm_s": warm,
            "cold_samples_per_s": n / cold, "warm_samples_per_s": n / warm,
            "cold_samples_per_cpu_s": n / max(cold_cpu, 1e-9), "warm_samples_per_cpu_s": n / max(warm_cpu, 1e-9),
            "build_s": build_s, "abstain": float(1 - ok.mean()), "mean": float(col[ok].mean()) if ok.any() else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    ap.add_argument("--world-model", required=True)
    ap.add_argument("--kb", required=True, help="`softverify genes build` output")
    ap.add_argument("--matrix", required=True, help="co-expression .npz")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policy", default=None, help="model for go_likelihood (e.g. smollm2)")
    ap.add_argument("--policy-samples", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench/verifier_throughput.json")
    a = ap.parse_args()
    import torch

    from softverify.bio.coexpression import CoexpressionMatrix, coexpression_questions
    from softverify.bio.perturbqa import load_table
    from softverify.verifiers.gokb import GOReference, kb_from_params

    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    k562 = load_table("k562", "de", mirror=Path(a.data) / "perturbqa")
    te = k562[k562["split"] == "test"].sample(a.n // a.group, random_state=0)
    go = GOReference(kb_from_params(kb_dir=a.kb))
    samples = make_samples(list(zip(te.pert, te.gene, te.label, ["de"] * len(te))), go, rng, a.group)
    qs = coexpression_questions(CoexpressionMatrix.load(a.matrix), a.n // a.group, "train", 0.1)
    co_samples = make_samples(list(zip(qs.pert, qs.gene, qs.label, qs.task)), go, rng, a.group)
    many = k562.sample(a.n, random_state=1)  # every sample its own pair: no group sharing
    unique = make_samples(list(zip(many.pert, many.gene, many.label, ["de"] * a.n)), go, rng, 1)
    kb = {"kb_dir": a.kb}
    runs = [
        (VerifierSpec(kind="hard"), samples), (VerifierSpec(kind="format"), samples),
        (VerifierSpec(kind="mention"), samples),
        (VerifierSpec(kind="world_model", params={"model_dir": a.world_model}), samples),
        (VerifierSpec(kind="world_model", name="world_model_unique_pairs", params={"model_dir": a.world_model}), unique),
        (VerifierSpec(kind="coexpression", params={"matrix": a.matrix}), co_samples),
        (VerifierSpec(kind="go_rouge", params=kb), samples),
        (VerifierSpec(kind="go_keywords", params=kb), samples),
    ]
    results = [time_verifier(s, smp, a.repeats) for s, smp in runs]
    if a.policy:
        from softverify.engines.base import with_assistant_prefix
        from softverify.engines.hf import HFEngine
        from softverify.model.names import resolve_model_path
        from softverify.task.prompts import row_messages

        eng = HFEngine(resolve_model_path(a.policy), dtype="float32", torch_threads=a.threads, batch_size=16)
        sub = samples[: a.policy_samples]
        pb = with_assistant_prefix(eng.render([row_messages({"question": f"Knockdown of {s.metadata['pert']}?"})
                                               for s in sub]), eng.tokenizer, "<think>\n")
        for s, text, ids in zip(sub, pb.texts, pb.token_ids):
            s.prompt, s.prompt_token_ids = text, ids
        results.append(time_verifier(VerifierSpec(kind="go_likelihood", params=kb), sub, 1, policy=eng))
    print("samples/s by wall clock (cold = first call, warm = second) and per CPU-second of this process")
    print(f"{'verifier':<26}{'n':>7}{'cold/s':>11}{'warm/s':>11}{'cold/cpu-s':>12}{'warm/cpu-s':>12}{'build_s':>9}"
          f"{'abstain':>9}{'mean':>8}")
    for r in results:
        mean = f"{r['mean']:8.3f}" if r["mean"] is not None else f"{'-':>8}"
        print(f"{r['verifier']:<26}{r['n']:>7}{r['cold_samples_per_s']:>11.0f}{r['warm_samples_per_s']:>11.0f}"
              f"{r['cold_samples_per_cpu_s']:>12.0f}{r['warm_samples_per_cpu_s']:>12.0f}"
              f"{r['build_s']:>9.2f}{r['abstain']:>9.1%}{mean}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": a.threads,
                               "load_average": list(__import__("os").getloadavg()),
                               "group": a.group, "results": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
