"""``softverify verify``: score a JSONL of completions with chosen verifiers, no training.

For debugging reward functions: feed hand-written or logged completions, see every
verifier's column, abstentions, the parsed answer and the composed reward.

Input rows need ``completion``; every other field is metadata the verifiers read
(``question``, ``pert``, ``gene``, ``label``, ``negated``, ``task``, ``prompt_id``).
Verifiers come from ``--config`` (a training config's ``verifiers`` list, weights and
aggregation included) and/or ``--verifier 'KIND key=value ...'`` (``name``, ``weight``,
``threshold`` and ``placement.<field>`` are spec fields, other keys are params).

The module also registers ``softverify verifiers report`` and ``softverify coexpr`` (build a
co-expression matrix from an ``.h5ad``; write co-expression questions).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def parse_verifier_arg(text: str):
    """``"coexpression matrix=x.npz top_fraction=0.2 weight=0.5"`` -> VerifierSpec.

    Values are read as ``--set`` reads them (:func:`~softverify.configbase.parse_typed`):
    ``name=yes`` stays a string, ``label_key=Answer:`` is not a YAML mapping, and text YAML
    cannot parse (``[1,``) is kept as written for validation to name."""
    from pydantic import ValidationError

    from softverify.config import VerifierSpec
    from softverify.configbase import ConfigError, field_annotation, format_validation_error, parse_typed

    parts = shlex.split(text)
    if not parts or "=" in parts[0]:
        raise ValueError(f"--verifier {text!r} must start with a kind, e.g. 'hard' or 'world_model model_dir=wm/'")
    spec: dict = {"kind": parts[0], "params": {}}
    for p in parts[1:]:
        if "=" not in p:
            raise ValueError(f"--verifier {text!r}: {p!r} is not key=value")
        k, v = p.split("=", 1)
        if k in ("name", "weight", "threshold", "num_cpus", "num_gpus"):  # the last two moved: named as such
            spec[k] = parse_typed(v, field_annotation(VerifierSpec, [k]))
        elif k.startswith("placement."):
            spec.setdefault("placement", {})[k.split(".", 1)[1]] = parse_typed(v, field_annotation(VerifierSpec,
                                                                                                k.split(".")))
        else:
            spec["params"][k] = parse_typed(v) if v else ""
    try:
        return VerifierSpec.model_validate(spec)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"--verifier {text!r}", "its fields are kind, name, weight, "
                                                  "threshold, placement.<field>; other keys are params")) from None


def read_rows(path: str) -> list[dict]:
    """The input JSONL, each row checked: a string ``completion``; ``label``/``negated``
    (when present) made 0/1, so a bad value is reported with its line, not deep in a verifier."""
    from softverify.task.answer import label_to_int

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"input {path!r} not found")
    rows = []
    for i, line in enumerate(p.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i + 1}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("completion"), str):
            raise ValueError(f"{path}:{i + 1}: each row needs a string 'completion'")
        for field in ("label", "negated"):
            if row.get(field) is not None:
                try:
                    row[field] = label_to_int(row[field])
                except ValueError as e:
                    raise ValueError(f"{path}:{i + 1}: field {field!r}: {e}") from None
        rows.append(row)
    if not rows:
        raise ValueError(f"input {path!r} has no rows")
    return rows


def to_samples(rows: list[dict], model: str | None, prefix: str, threads: int | None = None):
    """Samples; with ``model``, prompts are rendered and tokenised as the rollout worker does
    (needed by ``go_likelihood``), its engine on ``threads`` torch threads."""
    from softverify.types import Sample

    samples = []
    for i, r in enumerate(rows):
        meta = {k: v for k, v in r.items() if k != "completion"}
        samples.append(Sample(prompt_id=str(r.get("prompt_id", i)), prompt=str(r.get("prompt", r.get("question", ""))),
                              completion=r["completion"], metadata=meta, group=i))
    engine = None
    if model:
        from softverify.engines.base import render_rows
        from softverify.engines.hf import HFEngine
        from softverify.model.names import resolve_model_path

        engine = HFEngine(resolve_model_path(model), dtype="float32", torch_threads=threads)
        pb = render_rows(engine, rows, None, prefix)
        for s, text, ids in zip(samples, pb.texts, pb.token_ids):
            s.prompt, s.prompt_token_ids = text, ids
    return samples, engine


def score_all(specs, samples, engine=None) -> tuple[np.ndarray, list[float]]:
    """Score matrix ``[n, len(specs)]`` and seconds per verifier (build time excluded), by
    the same :class:`VerifierSuite` training and serving use."""
    from softverify.verifiers.suite import EnginePolicy, VerifierSuite

    suite = VerifierSuite(specs, policy=EnginePolicy(engine) if engine is not None else None)
    if suite.policy_names and engine is None:
        raise ValueError(f"verifier {suite.policy_names[0]!r} needs a policy: pass --model")
    cols, secs = [], []
    for name in suite.names:
        t = time.perf_counter()
        cols.append(suite.score(samples, [name])[:, 0])
        secs.append(time.perf_counter() - t)
    return np.column_stack(cols), secs


def summary_table(specs, scores: np.ndarray, secs: list[float]) -> str:
    head = f"{'verifier':<18}{'kind':<15}{'weight':>7}{'n':>7}{'abstain':>9}{'mean':>8}{'std':>8}{'min':>8}{'max':>8}{'samples/s':>12}"
    lines = [head, "-" * len(head)]
    for j, s in enumerate(specs):
        c = scores[:, j]
        ok = c[~np.isnan(c)]
        stats = [f"{f(ok):8.3g}" if ok.size else f"{'-':>8}" for f in (np.mean, np.std, np.min, np.max)]
        lines.append(f"{s.display_name:<18}{s.kind:<15}{s.weight:>7g}{len(c):>7}{1 - ok.size / max(len(c), 1):>9.1%}"
                     + "".join(stats) + f"{len(c) / max(secs[j], 1e-9):>12.0f}")
    return "\n".join(lines)


def _verify(args) -> int:
    from softverify.config import load_config
    from softverify.rewards import compose
    from softverify.task.answer import parse_answer
    from softverify.verifiers.base import composition_thresholds

    if args.list:
        from softverify.configbase import help_width
        from softverify.verifiers.base import kinds_help

        print("\n".join(kinds_help(help_width(), policy_note="needs policy: pass --model")))
        return 0
    if not args.input:
        raise ValueError("give an input JSONL (or --list)")
    import torch

    torch.set_num_threads(args.threads)  # world models score in this process; --model's engine too
    cfg = load_config(args.config) if args.config else None
    specs = (list(cfg.verifiers) if cfg else []) + [parse_verifier_arg(v) for v in args.verifier or []]
    if not specs:
        raise ValueError("no verifiers: pass --config and/or --verifier KIND")
    rows = read_rows(args.input)
    samples, engine = to_samples(rows, args.model, args.assistant_prefix, args.threads)
    scores, secs = score_all(specs, samples, engine)
    weights = [s.weight for s in specs]
    agg = args.aggregation or (cfg.reward.aggregation if cfg else "sum_then_normalize")
    groups = {}
    gid = np.array([groups.setdefault(str(r.get("prompt_id", i)), len(groups)) for i, r in enumerate(rows)])
    rewards = None
    if any(w > 0 for w in weights):
        rewards, _ = compose(scores, weights, composition_thresholds(specs), gid, agg)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as f:
            for i, s in enumerate(samples):
                rec = {"index": i, "prompt_id": s.prompt_id, "answer": parse_answer(s.completion),
                       "label": s.metadata.get("label"),
                       "scores": {sp.display_name: (None if np.isnan(v) else float(v)) for sp, v in zip(specs, scores[i])},
                       "reward": None if rewards is None or np.isnan(rewards[i]) else float(rewards[i])}
                f.write(json.dumps(rec) + "\n")
    print(summary_table(specs, scores, secs))
    if rewards is not None and np.isfinite(rewards).any():
        print(f"composed reward ({agg}): mean {np.nanmean(rewards):.4f}, std {np.nanstd(rewards):.4f}, "
              f"unscored {int(np.isnan(rewards).sum())}/{len(rewards)}")
    return 0


def _coexpr_build(args) -> int:
    from softverify.bio.coexpression import matrix_from_h5ad

    m = matrix_from_h5ad(args.h5ad, args.method, args.max_genes, min_cells=args.min_cells)
    m.save(args.out)
    print(json.dumps({"out": args.out, "genes": len(m.genes), "method": args.method}))
    return 0


def _coexpr_questions(args) -> int:
    from softverify.bio.coexpression import CoexpressionMatrix, coexpression_questions

    df = coexpression_questions(CoexpressionMatrix.load(args.matrix), args.n, args.split, args.top_fraction,
                                context=args.context, seed=args.seed)
    if args.out.endswith(".parquet"):
        df.to_parquet(args.out, index=False)
    else:
        df.to_json(args.out, orient="records", lines=True)
    print(json.dumps({"out": args.out, "rows": len(df), "positive": float(df["label"].mean())}))
    return 0


def _lookups_beside(rows: list[dict], mirror) -> dict | None:
    """The PerturbQA lookups' per-gene and pooled AUROC on the report's own knockdown questions
    (None for other questions). The questions' own perturbations are left out of the
    same-line table, so a validation question never looks itself up."""
    import numpy as np
    import pandas as pd

    from softverify.bio.lookups import lookup_report
    from softverify.task.answer import label_to_int
    from softverify.verifiers.report import de_oriented

    if not all("cell_line" in r for r in rows):
        return None
    labels = np.array([label_to_int(r["label"]) for r in rows])
    oriented = de_oriented(rows, labels)
    if oriented is None:
        return None
    df = pd.DataFrame({k: [r[k] for r in rows] for k in ("pert", "gene", "cell_line")})
    return lookup_report(df, oriented[1], mirror=mirror, exclude_perts=set(df["pert"]))


def _report(args) -> int:
    """``softverify verifiers report``: the config's verifiers on a labelled question set."""
    from pathlib import Path

    from softverify.config import load_config
    from softverify.data import load_prompts
    from softverify.infra.fsutil import write_text_atomic
    from softverify.verifiers.report import report_markdown, report_plot, verifier_report

    ov = list(args.overrides) + ([f"data.mirror={args.data_mirror}"] if args.data_mirror else [])
    cfg = load_config(args.config, ov)
    import torch

    torch.set_num_threads(args.threads)  # world-model verifiers score in this process
    if args.questions:
        import pandas as pd

        q = Path(args.questions)
        if not q.is_file():
            raise FileNotFoundError(f"question file {args.questions!r} not found")
        if q.suffix not in (".jsonl", ".parquet"):
            raise ValueError(f"question file {args.questions!r} must end in .jsonl or .parquet, got {q.suffix!r}")
        df = pd.read_parquet(q) if q.suffix == ".parquet" else pd.read_json(q, lines=True)
        rows = df.to_dict("records")
    else:
        ds = load_prompts(cfg.data, args.split, args.limit)
        rows = [ds[i] for i in range(len(ds))]
    if not rows or "label" not in rows[0]:
        raise ValueError("the verifier report needs labelled questions (a 'label' column)")
    rep = verifier_report(cfg.verifiers, rows, cfg.prompt.style, cfg.reward.aggregation,
                          cfg.algorithm.advantage or "grpo")
    rep["lookups"] = _lookups_beside(rows, cfg.data.mirror)
    md = report_markdown(rep)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "report.json", json.dumps(rep, indent=2, default=float))
        write_text_atomic(out / "report.md", md + "\n")
        report_plot(rep, out / "report.png")
        print(f"wrote {out / 'report.json'}, report.md, report.png", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from softverify.configbase import add_threads_argument

    r = subparsers.add_parser("verifiers", help="what a set of verifiers will teach, measured before training")
    rsub = r.add_subparsers(dest="verifiers_command", metavar="ACTION")
    rsub.required = True
    rp = rsub.add_parser("report", help="agreement with labels, calibration, pairwise agreement and the expected "
                         "reward of fixed strategies (always yes/no, follow the label, follow each verifier), also as the "
                         "learner receives them under the config's reward.aggregation")
    rp.add_argument("--config", "-c", help="training config YAML (its verifiers, prompt style, data)")
    rp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set verifiers.0.weight=0.5 (repeatable)")
    rp.add_argument("--questions", help="labelled question file (.jsonl/.parquet); default: the config's data")
    rp.add_argument("--split", default="train",
                    help="split of the config's data; threshold policies resolve on it (default %(default)s)")
    rp.add_argument("--limit", type=int, default=4000, help="questions drawn from the split (default %(default)s)")
    rp.add_argument("--data-mirror", help="local PerturbQA CSV folder")
    rp.add_argument("--out", help="directory for report.json, report.md, report.png (default: print only)")
    add_threads_argument(rp)
    rp.set_defaults(func=_report)

    p = subparsers.add_parser("verify", help="score a JSONL of completions with verifiers (no training)",
                              description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", help="JSONL with 'completion' + metadata fields per row")
    p.add_argument("--list", action="store_true", help="list the verifier kinds and exit")
    p.add_argument("--config", help="training config YAML whose verifiers (and reward.aggregation) to use")
    p.add_argument("--verifier", action="append", metavar="'KIND key=value ...'", help="add a verifier (repeatable)")
    p.add_argument("--out", help="write one JSON line per row here: its parsed answer, label, every verifier's score "
                   "and the composed reward (default: the summary table only)")
    p.add_argument("--model", help="policy for needs-policy verifiers (go_likelihood): 'smollm2' or a model dir")
    p.add_argument("--assistant-prefix", default="<think>\n",
                   help="with --model: text the assistant turn starts with (default %(default)r)")
    add_threads_argument(p)
    p.add_argument("--aggregation", choices=["sum_then_normalize", "normalize_then_sum"],
                   help="how verifier scores combine (default: the config's reward.aggregation, else sum_then_normalize)")
    p.set_defaults(func=_verify)

    c = subparsers.add_parser("coexpr", help="co-expression matrices and questions")
    csub = c.add_subparsers(dest="coexpr_command", metavar="ACTION")
    csub.required = True
    b = csub.add_parser("build", help="gene x gene co-expression (NPMI/Pearson/Spearman) from an .h5ad")
    b.add_argument("--h5ad", required=True, help="AnnData file (cells x genes counts or log-normalised expression)")
    b.add_argument("--out", required=True, help=".npz output")
    b.add_argument("--method", default="npmi", choices=["npmi", "pearson", "spearman"],
                   help="co-expression measure (default npmi: normalised PMI of co-detection)")
    b.add_argument("--max-genes", type=int, default=2000, help="most variable genes kept (default %(default)s)")
    b.add_argument("--min-cells", type=int, default=3, help="drop genes expressed in fewer cells (default 3)")
    b.set_defaults(func=_coexpr_build)
    q = csub.add_parser("questions", help="balanced co-expression yes/no questions from a matrix")
    q.add_argument("--matrix", required=True, help="matrix from `softverify coexpr build` (.npz)")
    q.add_argument("--out", required=True, help=".parquet or .jsonl")
    q.add_argument("--n", type=int, default=256, help="number of questions, half yes (default 256)")
    q.add_argument("--split", default="train", choices=["train", "test"],
                   help="train or test: pairs are split by a hash, never in both (default train)")
    q.add_argument("--top-fraction", type=float, default=0.1,
                   help="pairs in the top (bottom) fraction of scores are the yes (no) answers (default 0.1)")
    q.add_argument("--context", default="PBMC", help="cell context named in the question text (default PBMC)")
    q.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    q.set_defaults(func=_coexpr_questions)


if __name__ == "__main__":  # pragma: no cover
    from softverify.cli import main

    sys.exit(main(["verify", *sys.argv[1:]]))
