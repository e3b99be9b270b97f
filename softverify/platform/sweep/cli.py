"""``softverify sweep``: Ray Tune sweeps over verifier combinations, weights and thresholds."""
from __future__ import annotations

import argparse
from pathlib import Path


def cmd_sweep(args) -> int:
    from softverify.infra import quiet
    from softverify.configbase import ConfigError

    quiet.configure(args.verbose)  # before Ray and the libraries load: their chatter off unless --verbose
    from softverify.platform.sweep.spec import load_sweep

    for flag in ("restart_errored", "resume_errored"):
        if getattr(args, flag) and not args.resume:
            raise ConfigError(f"--{flag.replace('_', '-')} only applies with --resume (it says what a restored "
                              "sweep does with its failed trials)")
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    sweep = load_sweep(args.sweep_file, overrides)  # every error surfaces here, before Ray starts
    if args.check:
        n = len(sweep.representative_params())
        print(f"sweep {sweep.spec.name!r} is valid: {len(sweep.dists)} searched keys"
              f"{', ' + str(len(sweep.verifier_sets)) + ' verifier sets' if sweep.verifier_sets else ''}; "
              f"{n} representative trial configs validated")
        return 0
    from softverify.platform.sweep.report import no_best_reason, results_table, separability_note
    from softverify.platform.sweep.run import run_sweep

    results = run_sweep(sweep, resume=args.resume, restart_errored=args.restart_errored,
                        resume_errored=args.resume_errored)
    table = results_table(sweep, results)
    out = sweep.spec.output_dir
    with_cols = [c for c in table.columns if c.startswith(("trial_id", "status", "steps", "config/", "final/"))]
    print(table[with_cols].to_string(index=False))
    note = separability_note(sweep, table)
    if note:
        print(note)
    print(f"\nresults: {out}/results.csv  {out}/results.parquet  plot: {out}/sweep.png")
    t = sweep.spec.tune
    if (Path(out) / "best_config.yaml").is_file():
        print(f"best config (by final {t.metric}, {t.mode}): {out}/best_config.yaml  "
              f"(softverify train --config {out}/best_config.yaml)")
    else:
        print(f"no best_config.yaml: {no_best_reason(sweep, table)}")
    if (table["status"] == "INTERRUPTED").any():
        print(f"\nsweep interrupted; finish it with: softverify sweep {args.sweep_file} --resume"
              + "".join(f" --set {o!r}" for o in overrides))
        return 130
    n_err = int((table["status"] == "ERROR").sum())
    if n_err:
        print(f"{n_err} trial(s) failed; see the 'error' column of results.csv. To continue failed trials from "
              f"their last checkpoints (e.g. after a lost node): softverify sweep {args.sweep_file} --resume "
              "--resume-errored" + "".join(f" --set {o!r}" for o in overrides))
    return 0 if n_err < len(table) else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="run a Ray Tune sweep of short GRPO trainings (tune_configs/*.yaml)",
        description="Each trial is a short training by the platform's trainer; results go to "
        "<output_dir>/results.{csv,parquet}, best_config.yaml and sweep.png.")
    p.add_argument("sweep_file", help="sweep YAML (base/base_config, search, tune, output_dir)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show the libraries' own log lines (Ray, DeepSpeed, transformers progress bars), off by default")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep field, e.g. --set base.model.path=/models/tiny "
                   "--set tune.num_samples=8 (repeatable)")
    p.add_argument("--output-dir", help="shortcut for --set output_dir=...")
    p.add_argument("--resume", action="store_true", help="restore an interrupted sweep (Tuner.restore) and finish it")
    errored = p.add_mutually_exclusive_group()
    errored.add_argument("--restart-errored", action="store_true",
                         help="with --resume: run failed trials again from scratch")
    errored.add_argument("--resume-errored", action="store_true",
                         help="with --resume: continue failed trials from their last checkpoint (e.g. trials "
                         "whose node was lost: their trainer resumes exactly where its checkpoint left off)")
    p.add_argument("--check", action="store_true", help="validate the sweep file and exit")
    p.set_defaults(func=cmd_sweep)
