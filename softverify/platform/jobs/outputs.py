"""Where a submitted command writes, made safe before the job is submitted.

Why this exists: a Ray job's driver runs in a temporary copy of the uploaded working dir,
inside the node's Ray session directory (``/tmp/ray/session_*/runtime_resources/...``).
A relative output path -- ``trainer.output_dir``'s default ``runs/default``, a sweep's
``sweeps/...``, ``eval -o metrics.json`` -- resolves inside that copy, so the model, the
sweep results or the metrics vanish when Ray cleans the copy up, with no warning.

What a Ray/KubeRay user expects instead is what Ray Train and Tune ask for: outputs on
storage the cluster keeps (an NFS/PVC mount at the same path on every node). So every
output path of the submitted command is checked here, on the submitting side, before any
upload: an absolute path passes; a relative one is refused, naming the key or option and
the two ways out, unless a shared root was declared (``--output-root DIR`` or
``$SOFTVERIFY_OUTPUT_ROOT``), in which case it is placed under that root and the command
gets the explicit option. URIs (``s3://...``) are refused too: softverify writes its
outputs with local file APIs, so a bucket has to be mounted.

:data:`OUTPUTS` lists, per sub-command, where its outputs are named: a config key (set in
its YAML, by ``--set`` or by a shortcut flag) or an option. A test checks that every
``--out``/``--output``/``--output-dir`` option the CLI has is listed here.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from softverify.platform.jobs.client import JobsError

#: A shared root declared once (e.g. in a KubeRay user's shell profile) instead of --output-root.
OUTPUT_ROOT_ENV = "SOFTVERIFY_OUTPUT_ROOT"

#: Flags that make a command print something and write nothing.
NO_WRITE_DESTS = ("help_config", "check", "list")


@dataclass(frozen=True)
class ConfigOutput:
    """An output directory set in the command's config: its YAML file, ``--set KEY=...``
    overrides, or a shortcut flag (which wins, as the commands apply it last)."""

    key: str                       # dotted config key, e.g. "trainer.output_dir"
    flag: str                      # the command's shortcut option, e.g. "--output-dir"
    schema: Callable[[], type]     # the config class whose default applies (imported lazily)
    config_dest: str               # argparse dest of the YAML file
    overrides_dest: str            # argparse dest of the --set list
    shortcut_dest: str             # argparse dest of the shortcut flag
    label: str = ""                # how messages name it (default: the key)

    @property
    def what(self) -> str:
        return self.label or self.key


@dataclass(frozen=True)
class OptionOutput:
    """An output path given by an option; ``fallback_dest`` names a positional list whose
    first entry the command writes to when the option is absent."""

    dest: str
    flag: str
    fallback_dest: str | None = None

    @property
    def what(self) -> str:
        return self.flag


def _train_schema():
    from softverify.config import TrainConfig

    return TrainConfig


def _sweep_schema():
    from softverify.platform.sweep.spec import SweepSpec

    return SweepSpec


def _donor_schema():
    from softverify.envs.donor_game.config import DonorGameConfig

    return DonorGameConfig


#: Every sub-command that writes files, and where it is told to. Commands absent here write
#: nothing (serve, job ...) or only into the cache ($SOFTVERIFY_CACHE or ~/.cache/softverify,
#: an absolute path on the node): data fetch, genes build without --out.
OUTPUTS: dict[tuple[str, ...], tuple[ConfigOutput | OptionOutput, ...]] = {
    ("train",): (ConfigOutput("trainer.output_dir", "--output-dir", _train_schema, "config", "overrides",
                              "output_dir"),),
    ("sweep",): (ConfigOutput("output_dir", "--output-dir", _sweep_schema, "sweep_file", "overrides",
                              "output_dir", label="the sweep's output_dir"),),
    ("donor-game", "run"): (ConfigOutput("run.output_dir", "--output-dir", _donor_schema, "config", "set",
                                         "output_dir"),),
    ("donor-game", "plot"): (OptionOutput("output", "--output", fallback_dest="runs"),),
    ("donor-game", "prompts"): (OptionOutput("output", "--output"),),
    ("eval",): (OptionOutput("output", "--output"),),
    ("verify",): (OptionOutput("out", "--out"),),
    ("verifiers", "report"): (OptionOutput("out", "--out"),),
    ("data", "questions"): (OptionOutput("out", "--out"),),
    ("genes", "build"): (OptionOutput("out", "--out"),),
    ("embed", "genes"): (OptionOutput("out", "--out"),),
    ("worldmodel", "fit"): (OptionOutput("out", "--out"),),
    ("worldmodel", "table"): (OptionOutput("out", "--out"),),
    ("coexpr", "build"): (OptionOutput("out", "--out"),),
    ("coexpr", "questions"): (OptionOutput("out", "--out"),),
}


def command_path(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[str, ...]:
    """The sub-command names at the head of ``argv`` (``("donor-game", "run")``)."""
    path: list[str] = []
    p = parser
    for tok in argv:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or tok not in subs[0].choices:
            break
        path.append(tok)
        p = subs[0].choices[tok]
    return tuple(path)


def schema_default(model: type, dotted: str) -> Any:
    """The default of a dotted key in a pydantic config class (nested sections followed)."""
    *sections, leaf = dotted.split(".")
    for s in sections:
        model = model.model_fields[s].annotation
    return model.model_fields[leaf].default


def _dig(raw: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return None
        raw = raw[part]
    return raw


def config_output_value(spec: ConfigOutput, args: argparse.Namespace) -> tuple[str | None, bool]:
    """``(value, known)``: the output dir the command will use, as far as this machine can tell.

    Only overrides that can touch the key are applied (``trainer.output_dir=...`` or a whole
    ``trainer={...}``), so an override this check does not understand cannot fail it. A YAML
    file that exists only on the cluster (a mounted ConfigMap) leaves the value unknown
    unless an override or the shortcut sets it."""
    from softverify.configbase import apply_overrides, read_yaml

    shortcut = getattr(args, spec.shortcut_dest, None)
    if shortcut:
        return str(shortcut), True
    parts = spec.key.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    mine = [o for o in (getattr(args, spec.overrides_dest, None) or []) if o.split("=", 1)[0].strip() in prefixes]
    path = getattr(args, spec.config_dest, None)
    if path and not os.path.isfile(path):
        if not mine:
            return None, False
        raw: dict[str, Any] = {}
    else:
        raw = read_yaml(path) if path else {}
    value = _dig(apply_overrides(raw, mine), spec.key)
    return str(value if value is not None else schema_default(spec.schema(), spec.key)), True


def _option_value(spec: OptionOutput, args: argparse.Namespace) -> str | None:
    value = getattr(args, spec.dest, None)
    if value is None and spec.fallback_dest:
        first = (getattr(args, spec.fallback_dest, None) or [None])[0]
        value = first
    return None if value is None else str(value)


def check_output_root(root: str | None) -> str | None:
    """``--output-root`` (else ``$SOFTVERIFY_OUTPUT_ROOT``) validated: an absolute path."""
    where = "--output-root"
    if not root and os.environ.get(OUTPUT_ROOT_ENV):
        root, where = os.environ[OUTPUT_ROOT_ENV], f"${OUTPUT_ROOT_ENV}"
    if not root:
        return None
    if "://" in root:
        raise JobsError(f"{where} {root!r} is a URI: softverify writes its outputs with local file APIs, so mount "
                        f"the storage at the same path on every node and pass that absolute path")
    if not os.path.isabs(root):
        raise JobsError(f"{where} {root!r} must be an absolute path: a relative one would again resolve inside "
                        f"the job's temporary working dir")
    return os.path.normpath(root)


def place_output(what: str, flag: str, value: str, root: str | None) -> str | None:
    """Where the job writes ``what`` (a config key or option, named in messages): ``None``
    when ``value`` is absolute (unchanged), else ``value`` placed under ``root``. Raises
    :class:`JobsError` for a relative path without a root, and for a URI."""
    if "://" in value:
        raise JobsError(f"{what} {value!r} is a URI: softverify writes outputs with local file APIs, so mount the "
                        f"storage (an NFS/PVC/FUSE mount at the same path on every node) and pass that path")
    if os.path.isabs(value):
        return None
    if root is None:
        raise JobsError(
            f"{what} {value!r} is relative: the job runs in a temporary copy of the working dir on the cluster, "
            f"so what it writes there is deleted when the job ends. Pass an absolute path on storage the cluster "
            f"keeps ({flag} /mnt/shared/{os.path.normpath(value)} after the command), or --output-root DIR (or "
            f"${OUTPUT_ROOT_ENV}=DIR) to place relative output paths under DIR")
    return os.path.join(root, os.path.normpath(value))


def resolve_job_outputs(command: Sequence[str], output_root: str | None = None) -> tuple[list[str], list[str]]:
    """``(command, output paths)``: the submitted command with every output path made safe.

    Absolute paths pass unchanged; relative ones are placed under the shared root (the
    command gets the explicit option, appended so it wins) or refused; URIs are refused.
    A command asking for help or writing nothing (``--help-config``, ``--check``,
    ``--list``) is returned as given; one argparse rejects fails here, with its usage."""
    from softverify.cli import build_parser

    argv = list(command)
    if argv and argv[0] == "softverify":
        argv = argv[1:]
    root = check_output_root(output_root)
    parser = build_parser()
    path = command_path(parser, argv)
    specs = OUTPUTS.get(path)
    if not specs or "-h" in argv or "--help" in argv:
        return argv, []
    args = parser.parse_args(argv)
    if any(getattr(args, d, False) for d in NO_WRITE_DESTS):
        return argv, []
    outputs: list[str] = []
    extra: list[str] = []
    for spec in specs:
        if isinstance(spec, ConfigOutput):
            value, known = config_output_value(spec, args)
            if not known:
                print(f"softverify submit: {getattr(args, spec.config_dest)!r} is not readable here, so its "
                      f"{spec.key} cannot be checked; make sure it is absolute on the cluster's storage",
                      file=sys.stderr)
                continue
        else:
            value = _option_value(spec, args)
            if value is None:
                continue
        placed = place_output(spec.what, spec.flag, value, root)
        if placed is None:
            outputs.append(value)
        else:
            outputs.append(placed)
            extra += [spec.flag, placed]
    return argv + extra, outputs
