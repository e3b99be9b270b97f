"""``softverify donor-game run|plot|prompts``: play generations, draw the paper's figures, and
write donation prompts for GRPO against the ``donor_game`` verifier."""
from __future__ import annotations

import json
import logging

from softverify.envs.donor_game.config import DonorGameConfig, load_donor_config


def cmd_run(args) -> int:
    import sys

    from softverify.configbase import format_config_help

    if args.help_config:
        sys.stdout.write(format_config_help(DonorGameConfig, args.help_config, "softverify donor-game run"))
        return 0
    overrides = list(args.set or [])
    if args.output_dir:
        overrides.append(f"run.output_dir={args.output_dir}")
    if args.generations:
        overrides.append(f"game.num_generations={args.generations}")
    cfg = load_donor_config(args.config, overrides)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from softverify.envs.donor_game.runner import run_experiment

    summary = run_experiment(cfg)
    print(json.dumps({k: summary[k] for k in ("backend", "elapsed_s", "average_final_resources",
                                              "mean_donation_fraction", "rejections")}, indent=1))
    print(f"wrote {cfg.run.output_dir}/decisions.jsonl and summary.json")
    if not args.no_plot:
        from softverify.envs.donor_game.plots import plot_runs

        plot_runs([cfg.run.output_dir], cfg.run.output_dir)
        print(f"plots in {cfg.run.output_dir}/average_resources.png, donation_fractions.png")
    return 0


def cmd_plot(args) -> int:
    from softverify.envs.donor_game.plots import plot_runs

    out = args.output or args.runs[0]
    numbers = plot_runs(args.runs, out)
    for run, n in numbers.items():
        print(run)
        for k in ("generations", "average_final_resources", "mean_donation_fraction", "invalid_decision_rate"):
            print(f"  {k}: {n[k]}")
    print(f"wrote {out}/average_resources.png, donation_fractions.png, figure_numbers.json")
    return 0


def cmd_prompts(args) -> int:
    from softverify.envs.donor_game.runner import JsonlWriter
    from softverify.envs.donor_game.verifier import make_prompts

    from softverify.configbase import parse_scalar

    game = {}
    for kv in args.game or []:
        if "=" not in kv:
            raise ValueError(f"--game {kv!r} must look like key=value")
        k, v = kv.split("=", 1)
        game[k.strip()] = parse_scalar(v)
    rows = make_prompts(args.n, seed=args.seed, **game)
    w = JsonlWriter(args.output)
    w.write(rows)
    w.close()
    print(f"wrote {len(rows)} donor-game prompts to {args.output} (train with data.source=file, "
          f"verifier kind 'donor_game', rollout.stop=[])")
    return 0


def register(sub) -> None:
    p = sub.add_parser("donor-game", help="LLM societies playing the donor game over generations (Vallinder & Hughes 2024)")
    dsub = p.add_subparsers(dest="donor_command", metavar="{run,plot,prompts}")
    dsub.required = True

    r = dsub.add_parser(
        "run", help="play generations; write decisions.jsonl, summary.json and plots",
        description="Play generations of the donor game; write decisions.jsonl (every strategy and decision), "
        "summary.json and the plots.",
        epilog="summary.json 'rejections' holds three groups of counts that add up on their own. "
        "decisions: total = accepted + given_up (given up: every re-ask was rejected, the donor gave 0, the decision "
        "is logged valid: false). donation_answers: every answer asked for, re-asks included; attempts = accepted + "
        "rejected, rejected = the sum of by_reason, accepted = decisions.accepted. strategies: written = "
        "with_sentence + without_sentence ('My strategy will be' missing); strategies are never counted as "
        "rejections. Each generation record in decisions.jsonl carries the running totals.")
    r.add_argument("--config", "-c", help="YAML file with game/agent/run sections")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set game.multiplier=1.5 (repeatable)")
    r.add_argument("--output-dir", help="shortcut for --set run.output_dir=DIR")
    r.add_argument("--generations", type=int, help="shortcut for --set game.num_generations=N")
    r.add_argument("--no-plot", action="store_true", help="skip drawing the figures at the end")
    r.add_argument("--verbose", "-v", action="store_true", help="log rejected answers and generation summaries")
    r.add_argument("--help-config", nargs="?", const="all", metavar="SECTION",
                   help="print the config keys with their defaults and meanings, by section (SECTION keeps one, "
                   "e.g. game)")
    r.set_defaults(func=cmd_run)

    q = dsub.add_parser("plot", help="draw average resources per generation and donation fractions from runs")
    q.add_argument("runs", nargs="+", help="run directories (or decisions.jsonl files); several = one line each")
    q.add_argument("--output", "-o", help="where the PNGs go (default: the first run directory)")
    q.set_defaults(func=cmd_plot)

    t = dsub.add_parser("prompts", help="write donation prompts (JSONL) for GRPO with the 'donor_game' verifier")
    t.add_argument("-n", type=int, default=256, help="number of prompts (default 256)")
    t.add_argument("--output", "-o", required=True, help="a .jsonl file")
    t.add_argument("--seed", type=int, default=0, help="seed for the simulated game histories the prompts describe (default 0)")
    t.add_argument("--game", action="append", metavar="KEY=VALUE", help="game setting, e.g. --game multiplier=1.5")
    t.set_defaults(func=cmd_prompts)
