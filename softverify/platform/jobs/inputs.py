"""What a submitted command reads, checked before the job is submitted.

Why this exists: a Ray job's driver starts in a copy of the uploaded working dir on some
node. A relative input path -- ``--data-mirror ../shared/data/perturbqa``, a config's
``verifiers[i].params.kb_dir: runs/assets/kb``, ``--config ../my.yaml`` -- resolves inside
that copy, which holds only what Ray uploaded; an absolute path names the node's own
filesystem. Either way the job uploads, starts, and then fails on the cluster. The output
side (:mod:`softverify.platform.jobs.outputs`) already refuses what would be lost; this
module does the same for what would be missing, before anything is uploaded.

What an experienced Ray user expects, and what is done:

- a relative path inside the working dir that Ray uploads resolves on the cluster as it
  does here: it passes. The job starts in the same sub-folder of the copy as ``submit``
  was run from (:func:`job_subdir`), so ``../data`` from ``proj/exp`` still works;
- a relative path outside the working dir, one that does not exist here, or one Ray leaves
  out of the upload (``.gitignore``, ``.rayignore``, ``--exclude`` and submit's defaults
  such as ``runs/``: Ray's own matchers decide) is refused, naming the argument, its value
  and what to do;
- an absolute path that exists here passes when the cluster has it too: it lies under a
  path declared shared (``--cluster-has PATH``, or the output root, which every node
  mounts), or the cluster's every node is this machine (asked from the dashboard). Else it
  is refused. An absolute path that does not exist here is the cluster's own (a mounted
  volume) and passes with a note;
- URIs (``s3://``, ``hf://``) and names that are not paths (``smollm2``, a hub id) pass.

Where inputs are named: every string option or positional of the command that names an
existing local path (or any path, for options listed in :data:`PATH_DESTS`), every string
in its config (YAML file plus ``--set``, with the shortcut flags that feed it) that
names an existing local path or sits under a key listed in :data:`PATH_KEYS`, and the
``key=value`` parameters of ``verify --verifier``. Outputs are left to ``outputs.py``.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from softverify.platform.jobs.client import DEFAULT_EXCLUDES, JobsError

#: Flags that make a command read nothing on the cluster.
NO_READ_DESTS = ("help_config", "list")

#: argparse dests that are never input paths (config lists, control values) or are handled
#: elsewhere (outputs, the config merged below).
_SKIP_DESTS = {"command", "func", "overrides", "set", "verifier", "address", "api_key", "host", "served_model_name"}

#: Options whose value is always a local path when it is not a URI, so a relative one is
#: checked even when it does not exist here (``--config`` naming a file that is not there).
PATH_DESTS = {"config", "sweep_file", "input", "questions", "data_mirror"}

#: Config keys (a regex over the dotted key) that name local paths; a relative value is
#: checked even when it does not exist here. Other strings count when they name an
#: existing local path.
PATH_KEYS = re.compile(
    r"(.*\.)?(data\.path|data\.mirror|data\.extra_tasks\.\d+\.matrix|base_config"
    r"|verifiers\.\d+\.params\.(model_dir|p_table|matrix|kb_dir|gene_info|gene2go|obo|summaries|path))$")

#: Config keys that are not inputs: a cache this process fills, the Ray address.
_SKIP_KEYS = re.compile(r"(.*\.)?(model\.cache_dir|trainer\.ray_address|output_dir)$")

#: Commands whose config a shortcut flag feeds: dest -> dotted key, applied after ``--set``
#: as the commands do (so the flag names the value in messages).
CONFIG_SHORTCUTS: dict[tuple[str, ...], dict[str, str]] = {
    ("train",): {"model": "model.path", "data_mirror": "data.mirror"},
    ("eval",): {"data_mirror": "data.mirror"},
    ("verifiers", "report"): {"data_mirror": "data.mirror"},
}


@dataclass
class InputContext:
    """What decides whether the cluster can read a path: the folder ``submit`` runs in,
    the working dir Ray uploads (None: nothing is uploaded) and its excludes, the paths
    declared shared, and a way to ask whether the cluster is this machine."""

    cwd: Path
    working_dir: Path | None
    excludes: Sequence[str] = ()
    shared: Sequence[str] = ()
    cluster_is_local: Callable[[], bool] = lambda: False
    notes: list[str] = field(default_factory=list)
    _local: bool | None = None

    def is_local(self) -> bool:
        if self._local is None:
            self._local = bool(self.cluster_is_local())
        return self._local


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def job_subdir(cwd: Path, working_dir: Path | None) -> str | None:
    """The sub-folder of the working dir ``submit`` runs in (``exp/a``), where the job
    starts so that relative paths resolve as they do here; None at its top or outside it."""
    if working_dir is None:
        return None
    cwd, wd = Path(os.path.realpath(cwd)), Path(os.path.realpath(working_dir))
    if cwd == wd or not _inside(cwd, wd):
        return None
    return str(cwd.relative_to(wd))


def upload_exclusion(working_dir: Path, target: Path, excludes: Sequence[str] = ()) -> str | None:
    """Why Ray leaves ``target`` (inside ``working_dir``), or a file under it, out of the
    upload: ``"'runs/assets/kb' (excluded by submit's excludes ...)"``; None when all of it goes.

    Ray's own matchers decide (ray._private.runtime_env.packaging, pinned Ray): the
    runtime env's ``excludes`` with Ray's default excludes, and every ``.gitignore``
    (unless $RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1) and ``.rayignore`` from the working dir
    down, each matched relative to its own folder, as Ray's upload walk does."""
    from ray._private.ray_constants import RAY_RUNTIME_ENV_IGNORE_GITIGNORE, get_runtime_env_default_excludes
    from ray._private.runtime_env.packaging import _get_excludes, _get_ignore_file

    wd = Path(os.path.realpath(working_dir))
    target = Path(os.path.realpath(target))
    patterns = list(get_runtime_env_default_excludes()) + list(DEFAULT_EXCLUDES) + list(excludes)
    base = [(f"submit's excludes ({', '.join(patterns)}; add patterns with --exclude)", _get_excludes(wd, patterns))]
    ignore_files = [".rayignore"] + ([".gitignore"] if os.environ.get(RAY_RUNTIME_ENV_IGNORE_GITIGNORE, "0") != "1"
                                     else [])

    def rules_of(folder: Path) -> list[tuple[str, Callable]]:
        out = []
        for name in ignore_files:
            m = _get_ignore_file(folder, ignore_file=name)
            if m is not None:
                out.append((str(folder / name), m))
        return out

    def excluded(node: Path, rules) -> str | None:
        for why, m in rules:
            if m(node):
                return f"{str(node.relative_to(wd))!r} (excluded by {why})"
        return None

    rules = base + rules_of(wd)
    node = wd
    for part in target.relative_to(wd).parts:
        node = node / part
        if (hit := excluded(node, rules)) is not None:
            return hit
        if node.is_dir():
            rules = rules + rules_of(node)
    if not target.is_dir():
        return None
    stack = [(target, rules)]
    while stack:
        folder, frules = stack.pop()
        for child in sorted(folder.iterdir()):
            if (hit := excluded(child, frules)) is not None:
                return hit
            if child.is_dir():
                stack.append((child, frules + rules_of(child)))
    return None


def check_input(what: str, value: str, ctx: InputContext, must_be_path: bool = False) -> None:
    """Raise :class:`JobsError` when the job could not read ``value`` (named ``what`` in the
    message, e.g. ``data.mirror`` or ``--config``); pass (noting absolute paths only the
    cluster has) otherwise. A relative value that is not here is a path only when
    ``must_be_path`` (else a name such as ``smollm2``)."""
    if not value or "://" in value:
        return
    local = Path(os.path.expanduser(value))
    if not local.is_absolute():
        local = ctx.cwd / local
    try:
        exists = local.exists()
    except (OSError, ValueError):  # a system prompt, a name too long or with a NUL byte: not a path
        exists = False
    if os.path.isabs(os.path.expanduser(value)):
        if not exists:
            ctx.notes.append(f"{what} {value} is not on this machine; the job expects it on the cluster")
            return
        real = os.path.realpath(local)
        for shared in ctx.shared:
            if _inside(Path(real), Path(os.path.realpath(shared))):
                return
        if ctx.is_local():
            return
        hint = ""
        if ctx.working_dir is not None and _inside(Path(real), Path(os.path.realpath(ctx.working_dir))):
            hint = f", or pass it relative (it is inside the uploaded working dir {ctx.working_dir})"
        raise JobsError(f"{what} {value!r} is a path on this machine, and the cluster's nodes are other machines: if "
                        f"every node has it at the same path (a shared mount), say so with --cluster-has {value} (or a "
                        f"folder above it){hint}; else copy it to storage the cluster mounts")
    if not exists and not must_be_path:
        return  # a name (smollm2, a hub id), not a path
    where = "upload nothing (--no-working-dir)" if ctx.working_dir is None else \
        f"upload the working dir {ctx.working_dir}"
    fix = ("put it on storage every node mounts and pass its absolute path (with --cluster-has DIR if this machine "
           "has it too)")
    if ctx.working_dir is None:
        raise JobsError(f"{what} {value!r} is relative, but the job would {where}, so it cannot read it: {fix}")
    wd = Path(os.path.realpath(ctx.working_dir))
    if not _inside(Path(os.path.realpath(ctx.cwd)), wd):
        raise JobsError(f"{what} {value!r} is relative to {ctx.cwd}, which is outside the working dir {wd} the job "
                        f"runs in: run submit from inside {wd}, or pass --working-dir with the folder that holds it")
    if not exists:
        raise JobsError(f"{what} {value!r} does not exist here ({local}), so the job's copy of {wd} will not hold it "
                        f"either: fix the path, or {fix}")
    real = Path(os.path.realpath(local))
    if not _inside(real, wd):
        raise JobsError(f"{what} {value!r} is outside the working dir {wd} that submit uploads, so the job cannot "
                        f"read it: move or copy it inside {wd} and pass that relative path, or {fix}")
    hit = upload_exclusion(wd, real, ctx.excludes)
    if hit is not None:
        raise JobsError(f"{what} {value!r} would not reach the cluster: Ray leaves {hit} out of the upload. "
                        f"{fix[0].upper() + fix[1:]}, or stop excluding it")


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, value)`` for every string in a nested dict/list."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}{i}.")
    elif isinstance(node, str):
        yield prefix[:-1], node


def _config_inputs(path: tuple[str, ...], args: argparse.Namespace, cwd: Path) -> Iterator[tuple[str, str, bool]]:
    """``(what, value, must_be_path)`` for the strings of the command's config: its YAML
    (when readable here) with ``--set`` and the shortcut flags applied as the command applies them."""
    from softverify.configbase import apply_overrides, read_yaml

    cfg_path = getattr(args, "config", None) or getattr(args, "sweep_file", None)
    overrides = list(getattr(args, "overrides", None) or getattr(args, "set", None) or [])
    shortcuts = CONFIG_SHORTCUTS.get(path, {})
    flag_of = {}
    for dest, key in shortcuts.items():
        value = getattr(args, dest, None)
        if value:
            overrides.append(f"{key}={value}")
            flag_of[key] = "--" + dest.replace("_", "-")
    if not cfg_path and not overrides:
        return
    local_cfg = cwd / os.path.expanduser(cfg_path) if cfg_path else None  # cwd: where submit runs
    raw = read_yaml(local_cfg) if local_cfg and local_cfg.is_file() else {}
    for key, value in _leaves(apply_overrides(raw, overrides)):
        if _SKIP_KEYS.fullmatch(key):
            continue
        what = f"{key} ({flag_of[key]})" if key in flag_of else key
        if key == "base_config" and cfg_path and not os.path.isabs(value):  # the sweep reads it beside its file
            value, what = os.path.join(os.path.dirname(cfg_path), value), f"{key} (beside {cfg_path})"
        yield what, value, bool(PATH_KEYS.fullmatch(key))


def _leaf_parser(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def _option_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   skip: set[str]) -> Iterator[tuple[str, str, bool]]:
    """Every string option and positional; named as the user wrote it (``--config``, ``INPUT``)."""
    names = {a.dest: (max(a.option_strings, key=len) if a.option_strings else (a.metavar or a.dest).upper())
             for a in parser._actions}
    for dest, value in vars(args).items():
        if dest in skip or dest in _SKIP_DESTS or dest not in names:
            continue
        flag = names[dest]
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str):
                yield flag, v, dest in PATH_DESTS


def _verifier_inputs(args: argparse.Namespace) -> Iterator[tuple[str, str, bool]]:
    """``verify --verifier 'world_model model_dir=wm/'``: each ``key=value`` parameter."""
    for text in getattr(args, "verifier", None) or []:
        try:
            parts = shlex.split(text)
        except ValueError:
            continue  # the command itself names the bad quoting
        for p in parts[1:]:
            k, sep, v = p.partition("=")
            if sep:
                yield f"--verifier {parts[0]} {k}", v, bool(PATH_KEYS.fullmatch(f"verifiers.0.params.{k}"))


def check_job_inputs(command: Sequence[str], ctx: InputContext) -> list[str]:
    """Check every input path of ``command`` (argv after ``softverify``) against ``ctx``;
    raise :class:`JobsError` for the first the job could not read. Returns the notes
    (absolute paths only the cluster has) for the caller to print."""
    from softverify.cli import build_parser
    from softverify.platform.jobs.outputs import OUTPUTS, OptionOutput, command_path

    argv = list(command)
    if argv and argv[0] == "softverify":
        argv = argv[1:]
    parser = build_parser()
    path = command_path(parser, argv)
    if not path or "-h" in argv or "--help" in argv:
        return []
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return []  # argparse printed its usage; the entrypoint check names a bad command
    if any(getattr(args, d, False) for d in NO_READ_DESTS):
        return []
    skip = {s.dest for s in OUTPUTS.get(path, ()) if isinstance(s, OptionOutput)}
    skip |= {s.shortcut_dest for s in OUTPUTS.get(path, ()) if not isinstance(s, OptionOutput)}
    skip |= {s.fallback_dest for s in OUTPUTS.get(path, ()) if isinstance(s, OptionOutput) and s.fallback_dest}
    skip |= set(CONFIG_SHORTCUTS.get(path, {}))
    seen: set[tuple[str, str]] = set()
    for what, value, must in [*_option_inputs(_leaf_parser(parser, path), args, skip), *_config_inputs(path, args, ctx.cwd), *_verifier_inputs(args)]:
        if (what, value) not in seen:
            seen.add((what, value))
            check_input(what, value, ctx, must)
    return ctx.notes


def cluster_is_this_machine(client) -> bool:
    """True when every alive node of the cluster reports this machine's hostname (a
    ``ray start --head`` here, a laptop's local cluster): its absolute paths are ours.
    A port-forwarded KubeRay head (also 127.0.0.1) reports its pods' names instead."""
    try:
        hosts = client.node_hostnames()
    except Exception as e:  # noqa: BLE001  (an older dashboard, a proxy): then the cluster is another machine
        print(f"softverify submit: could not ask the cluster for its nodes ({type(e).__name__}); treating it as "
              f"other machines", file=sys.stderr)
        return False
    return bool(hosts) and set(hosts) == {socket.gethostname()}
