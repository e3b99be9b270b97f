"""The one entry point: ``softverify train|eval|sweep|serve|submit|data|genes|worldmodel|...``.

Each command group lives in the module that owns the capability and exposes
``register(subparsers)``; this file only lists those modules and turns user mistakes
(:class:`~softverify.config.ConfigError`, ``ValueError`` from validation,
``FileNotFoundError``) into a one-line message and exit code 2 instead of a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute sub-commands via ``register(subparsers)``.
COMMAND_MODULES = [
    "softverify.bio.cli",
    "softverify.platform.train.cli",
    "softverify.platform.jobs.cli",
    "softverify.platform.sweep.cli",
    "softverify.verifiers.cli",
    "softverify.platform.serve.cli",
    "softverify.envs.donor_game.cli",
]


class UserError(Exception):
    """Raised for mistakes the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softverify",
        description="GRPO on Ray against hard, soft (world-model) and knowledge verifiers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from softverify.configbase import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except (ConfigError, UserError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
            ValueError) as e:
        print(f"softverify {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"softverify {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
