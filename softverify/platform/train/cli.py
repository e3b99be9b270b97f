"""``softverify train`` and ``softverify eval``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _add_config_args(p: argparse.ArgumentParser, model_flag: bool = True) -> None:
    p.add_argument("--config", "-c", help="YAML config file (see configs/ and --help-config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set rollout.group_size=8 (repeatable)")
    if model_flag:  # eval names its model positionally; two ways to say it would be one too many
        p.add_argument("--model", help="shortcut for --set model.path=...")
    p.add_argument("--data-mirror", help="shortcut for --set data.mirror=... (local PerturbQA CSV folder)")


def _shortcuts(args) -> list[str]:
    ov = list(args.overrides)
    if getattr(args, "model", None):
        ov.append(f"model.path={args.model}")
    if getattr(args, "data_mirror", None):
        ov.append(f"data.mirror={args.data_mirror}")
    if getattr(args, "steps", None) is not None:
        ov.append(f"trainer.steps={args.steps}")
    if getattr(args, "output_dir", None):
        ov.append(f"trainer.output_dir={args.output_dir}")
    return ov


def cmd_train(args) -> int:
    from softverify.infra import quiet
    from softverify.config import load_config

    quiet.configure(args.verbose)  # before Ray and the libraries load: their chatter off unless --verbose
    if args.help_config:
        from softverify.platform.train.helpconfig import train_config_help

        sys.stdout.write(train_config_help(args.help_config))
        return 0
    cfg = load_config(args.config, _shortcuts(args))
    from softverify.platform.train.trainer import IdleRunError, Trainer

    import ray.exceptions

    from softverify.platform.train import checkpoint as ckpt

    trainer = Trainer(cfg, resume="auto" if args.auto_resume else args.resume)
    try:
        final = trainer.fit()
    except IdleRunError as e:
        print(f"softverify train: stopped at step {trainer.step}: {e}", file=sys.stderr)
        return 1
    except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError) as e:
        # A learner rank (or a worker past its restart budget) died, or a node went down with
        # the objects it held: the DeepSpeed world is broken, so stop cleanly and point at the
        # last complete checkpoint.
        last = ckpt.latest(Path(cfg.trainer.output_dir) / "checkpoints")
        where = f"the last complete checkpoint is {last}" if last else "no checkpoint was written yet"
        what = "an actor died" if isinstance(e, ray.exceptions.RayActorError) else "a Ray node or object was lost"
        print(f"softverify train: {what} at {trainer.where()} ({type(e).__name__}: "
              f"{str(e).strip().splitlines()[0][:200]}); {where}. Re-run with --resume (or --auto-resume) "
              f"to continue.", file=sys.stderr)
        return 1
    finally:
        trainer.shutdown()
    from softverify.platform.train.summary import format_summary

    print(format_summary(trainer.summary, Path(cfg.trainer.output_dir), final, cfg.trainer.eval_every))
    return 0


def cmd_eval(args) -> int:
    from softverify.config import load_config
    from softverify.data import load_protocol_prompts
    from softverify.engines.hf import HFEngine
    from softverify.model.names import resolve_model_path
    from softverify.evaluation.run import run_eval
    from softverify.evaluation.classification import format_table

    cfg = load_config(args.config, _shortcuts(args))
    split = "test" if args.protocol == "perturbqa" else args.split
    rows = load_protocol_prompts(cfg.data, args.protocol, split, args.limit)
    if args.protocol != "sample":
        print(f"eval protocol {args.protocol}: {len(rows)} questions on {len(set(rows['gene']))} target genes "
              f"({split} split of {','.join(cfg.data.cell_lines)})", file=sys.stderr)
    if "label" not in rows.column_names:
        raise ValueError(f"eval needs labelled questions; split {args.split!r} has columns {rows.column_names}")
    model_path = resolve_model_path(args.model_dir, cfg.model.cache_dir)
    engine = HFEngine(model_path, cfg.model.dtype,
                      torch_threads=args.threads or cfg.rollout.torch_threads, batch_size=args.batch_size,
                      decode=cfg.rollout.hf_decode)
    system, prefix, stop = cfg.rollout.system_prompt, cfg.rollout.assistant_prefix, cfg.rollout.stop
    from softverify.task.prompts import load_trained_prompt

    tp = load_trained_prompt(model_path)
    prompt_set = args.config or any(o.startswith(("rollout.", "prompt.")) for o in args.overrides)
    if tp is not None and not prompt_set:  # ask the policy as it was trained
        system, prefix, stop = tp.system_prompt, tp.assistant_prefix, tp.stop or stop
        print(f"prompts as trained: {tp.style} style (from {tp.source}); a --config or --set prompt.*/rollout.* overrides it", file=sys.stderr)
    res = run_eval(engine, rows, max_new_tokens=args.max_new_tokens or cfg.rollout.max_new_tokens,
                   stop=stop, assistant_prefix=prefix, samples=args.samples,
                   temperature=cfg.rollout.temperature, seed=args.seed, batch_size=args.batch_size,
                   force_answer=not args.no_force, system_prompt=system, score_only=args.score_only)
    metrics, records = res.metrics, res.records
    metrics.update(model=str(args.model_dir), split=split, protocol=args.protocol, samples_per_question=args.samples)
    if res.forced_metrics is not None:
        metrics["forced"] = res.forced_metrics
    lookups = _lookups_beside(cfg, rows, split)
    if lookups is not None:
        metrics["lookups"] = lookups
    print(format_table(metrics))
    if res.forced_metrics is not None:
        print("forced reading (yes/no by likelihood at the answer position; AUROC/AUPRC of that score, 95% bootstrap CI):")
        print(format_table(res.forced_metrics))
    if res.forced_metrics is not None and "auc_per_gene" in res.forced_metrics:
        print(per_gene_table(res.forced_metrics, lookups))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        from softverify.platform.train.checkpoint import write_text_atomic

        write_text_atomic(out, json.dumps(metrics, indent=2))
        write_text_atomic(out.with_suffix(".completions.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(json.dumps(metrics))
    return 0


def _lookups_beside(cfg, rows, split: str) -> dict | None:
    """The lookup baselines (softverify.bio.lookups) on the rows just scored, or None when the
    rows are not PerturbQA questions. A validation split's perturbations never feed the
    same line's target-gene rate."""
    if cfg.data.source != "perturbqa" or not {"pert", "gene", "cell_line", "label"} <= set(rows.column_names):
        return None
    import numpy as np

    from softverify.bio.lookups import lookup_report
    from softverify.bio.questions import select_split

    df = rows.to_pandas()
    de = np.where(df["negated"].to_numpy(bool), 1 - df["label"].to_numpy(), df["label"].to_numpy())
    exclude = set(select_split(cfg.data, "val")["pert"]) if split == "val" else None
    return lookup_report(df, de, mirror=cfg.data.mirror, exclude_perts=exclude)


def per_gene_table(forced: dict, lookups: dict | None) -> str:
    """PerturbQA's per-gene AUROC of the policy beside the lookups on the same rows."""
    lines = [f"{'scorer':<28} {'auc_per_gene [95% CI over genes]':>34} {'pooled AUROC':>13}",
             f"{'policy (forced margin)':<28} {forced['auc_per_gene']:>8.3f} [{forced['auc_per_gene_lo']:.3f}, "
             f"{forced['auc_per_gene_hi']:.3f}] ({forced['auc_per_gene_genes']} genes) {forced['auroc']:>9.3f}"]
    if "teacher_auc_per_gene" in forced:
        lines.append(f"{'teacher (world model p)':<28} {forced['teacher_auc_per_gene']:>8.3f} "
                     f"[{forced['teacher_auc_per_gene_lo']:.3f}, {forced['teacher_auc_per_gene_hi']:.3f}]")
    for name, m in (lookups or {}).items():
        lines.append(f"{'lookup ' + name:<28} {m['auc_per_gene']:>8.3f} [{m['auc_per_gene_lo']:.3f}, "
                     f"{m['auc_per_gene_hi']:.3f}] ({m['auc_per_gene_genes']} genes) {m['auroc']:>9.3f}")
    return "\n".join(lines)


TRAIN_DESCRIPTION = """\
GRPO training of a reasoning LLM against verifiers, on Ray. With no options it runs the
embedded default: a local Ray, SmolLM2-135M-Instruct, PerturbQA K562 questions in the direct
style, the hard (experimental label) and format verifiers, and a periodic held-out eval
(forced-score AUROC, MCC). configs/verifiers_world_model.yaml trains against a world model.

    softverify train --data-mirror DIR                      # the default job, data from DIR
    softverify train --config configs/verifiers_hard.yaml --steps 50
    softverify train --set rollout.group_size=8 --set learner.lr=5e-5
    softverify train --output-dir runs/x --resume           # continue from the last checkpoint

Outputs go to trainer.output_dir: metrics.jsonl, metrics.png, checkpoints/, final/.
--help-config [SECTION] lists the keys with their defaults and meanings (e.g. --help-config rollout).
"""

EVAL_DESCRIPTION = """\
Answers held-out questions with a model and reports TPR/TNR/F1/MCC of its free answers,
plus a forced reading (yes/no by likelihood at the answer position) with AUROC/AUPRC and
95% bootstrap intervals. A model saved by `softverify train` is asked with the prompt it was
trained with; --config or --set prompt.*/rollout.* overrides that.

    softverify eval runs/default/final --limit 512 --data-mirror DIR -o runs/default/eval.json
    softverify eval runs/default/final --protocol perturbqa --data-mirror DIR -o runs/default/pqa.json

With labelled PerturbQA rows it also reports PerturbQA's auc_per_gene (mean over target genes
of the AUROC across knockdowns, 95% interval over genes) beside the pooled AUROC, and the
lookups scored on the same rows: the target gene's DE rate (which only the pooled metric
rewards) and the knockdown's DE rate / the pair's label in the other cell lines.
"""


class RemovedOption(argparse.Action):
    """An option that no longer exists: using it is a one-line error saying what replaced
    it (argparse would say only "unrecognized arguments"). Hidden from --help."""

    def __init__(self, option_strings, dest, replacement: str, **kw):
        kw["help"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, **kw)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} was removed: {self.replacement}")


def register(sub) -> None:
    from softverify.configbase import add_threads_argument

    p = sub.add_parser("train", help="run GRPO training (default: local Ray, SmolLM2, PerturbQA K562)",
                       description=TRAIN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p)
    p.add_argument("--steps", type=int, help="shortcut for --set trainer.steps=N")
    p.add_argument("--output-dir", help="shortcut for --set trainer.output_dir=DIR")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    p.add_argument("--auto-resume", action="store_true",
                   help="resume if output_dir has a checkpoint, else start fresh (for restartable cluster jobs)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show the libraries' own log lines (Ray, DeepSpeed, transformers progress bars from the "
                   "actors), off by default; the product's lines, the progress bar and errors show either way")
    p.add_argument("--help-config", nargs="?", const="all", metavar="SECTION",
                   help="print the config keys with their defaults and meanings, by section; SECTION keeps one "
                   "(model, data, rollout, verifiers, reward, algorithm, learner, prompt, trainer, or a dotted prefix "
                   "such as learner.lora); verifiers also lists the verifier kinds and their params")
    p.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="answer held-out questions and report TPR/TNR/F1/MCC",
                       description=EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("model_dir", help="a trained model directory (e.g. runs/x/final), a HF dir, or 'smollm2'")
    _add_config_args(e, model_flag=False)
    e.add_argument("--split", default="test", help="question split (default: test)")
    e.add_argument("--limit", type=int, default=200, help="number of questions with --protocol sample (default 200)")
    e.add_argument("--protocol", choices=["sample", "genes", "perturbqa"], default="sample",
                   help="sample: --limit balanced questions; genes: whole target genes as the periodic eval draws them "
                   "(data.eval_genes); perturbqa: every row of the upstream test split whose target gene holds both "
                   "labels, PerturbQA's auc_per_gene protocol (the number to quote; slow: K562 has 5,641 such rows) "
                   "(default %(default)s)")
    e.add_argument("--samples", type=int, default=1,
                   help="1 = greedy; N > 1 = N samples at rollout.temperature, majority answer (default %(default)s)")
    e.add_argument("--max-new-tokens", type=int, help="generation budget (default: rollout.max_new_tokens)")
    e.add_argument("--batch-size", type=int, default=16, help="questions generated together (default 16)")
    add_threads_argument(e, default=None, default_text="rollout.torch_threads = 1")
    e.add_argument("--seed", type=int, default=0, help="sampling seed with --samples > 1 (default 0)")
    e.add_argument("--score-only", action="store_true",
                   help="direct style: no generation, the forced yes/no score only (one forward per question; the "
                   "free reading then equals the forced one)")
    e.add_argument("--no-force", action="store_true",
                   help="skip the forced reading (unanswered turns closed, yes/no chosen by likelihood)")
    e.add_argument("--output", "-o", help="write metrics JSON here and the completions next to it "
                   "(default: print the metrics JSON)")
    e.add_argument("--model", action=RemovedOption, nargs="?",
                   replacement="name the model positionally: softverify eval MODEL_DIR")
    e.set_defaults(func=cmd_eval)
