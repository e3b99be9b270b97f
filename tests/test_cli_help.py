"""Every command's --help is complete and true: each option explains itself, and the
files an example names exist in the project."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from softverify.cli import build_parser
from softverify.platform.train.cli import RemovedOption

REPO = Path(__file__).resolve().parents[1]


def _commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ("softverify",)):
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                if sub.prog.split()[-1] == name:  # skip aliases
                    yield from _commands(sub, path + (name,))


def test_every_option_has_help():
    missing = []
    for path, p in _commands(build_parser()):
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction, RemovedOption)):
                continue
            if not a.help or a.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)} {'/'.join(a.option_strings) or a.dest}")
    assert not missing, "options without help text:\n" + "\n".join(missing)


def test_help_examples_name_files_that_exist():
    """configs/... and tune_configs/... paths in any help text are shipped files."""
    named = set()
    for path, p in _commands(build_parser()):
        text = p.format_help()
        named |= {(" ".join(path), m) for m in re.findall(r"\b((?:tune_)?configs/[\w./-]+\.ya?ml)\b", text)}
    assert named, "no help text names a config file (the examples moved?)"
    absent = [f"{cmd}: {f}" for cmd, f in sorted(named) if not (REPO / f).is_file()]
    assert not absent, "help names files the project lacks:\n" + "\n".join(absent)


def test_help_has_no_developer_markup_and_no_foreign_descriptions():
    for path, p in _commands(build_parser()):
        text = p.format_help()
        assert ":mod:" not in text and ":class:" not in text and "``" not in text, " ".join(path)
    verify = dict((" ".join(k), v) for k, v in _commands(build_parser()))["softverify verify"]
    assert "coexpr" not in (verify.description or "")


def test_eval_names_its_model_once(capsys):
    """The model is positional; the old --model is hidden and its use says what replaced it."""
    ev = dict((" ".join(k), v) for k, v in _commands(build_parser()))["softverify eval"]
    shown = {o for a in ev._actions if a.help != argparse.SUPPRESS for o in a.option_strings}
    assert "--model" not in shown and "--model" not in ev.format_help()
    assert ev.description and "forced" in ev.description
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["eval", "--model", "runs/x/final"])
    assert e.value.code == 2
    assert "--model was removed: name the model positionally: softverify eval MODEL_DIR" in capsys.readouterr().err


def test_every_option_states_its_default():
    """An option with a real default (not None/False/[]) says what it is in its help."""
    unstated = []
    for path, p in _commands(build_parser()):
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) or not a.option_strings:
                continue
            if a.default in (None, False, argparse.SUPPRESS) or a.default == []:
                continue
            name = f"{' '.join(path)} {a.option_strings[-1] if a.option_strings[-1].startswith('--') else a.option_strings[0]}"
            if "default" not in (a.help or ""):
                unstated.append(f"{name} (default {a.default!r})")
    assert not unstated, "options whose help does not state the default:\n" + "\n".join(unstated)


def test_torch_threads_default_to_one_everywhere(capsys):
    """One documented default (DEFAULT_TORCH_THREADS = 1) for every command that runs torch here and
    for training's workers and ranks; --threads N changes it, 0 is refused by name."""
    from softverify.config import build_config
    from softverify.configbase import DEFAULT_TORCH_THREADS
    from softverify.envs.donor_game.config import AgentConfig

    cfg = build_config()
    assert DEFAULT_TORCH_THREADS == cfg.rollout.torch_threads == cfg.learner.torch_threads == 1
    assert AgentConfig().torch_threads == 1
    from softverify.platform.serve.config import ReplicaConfig

    assert ReplicaConfig().torch_threads == DEFAULT_TORCH_THREADS == ReplicaConfig().num_cpus  # threads = reserved CPUs
    cmds = dict((" ".join(k), v) for k, v in _commands(build_parser()))
    with_threads = {name: next(a for a in p._actions if "--threads" in a.option_strings)
                    for name, p in cmds.items() if any("--threads" in a.option_strings for a in p._actions)}
    assert {"softverify eval", "softverify verify", "softverify verifiers report", "softverify worldmodel fit",
            "softverify worldmodel eval", "softverify embed genes"} <= set(with_threads)
    for name, a in with_threads.items():
        assert a.default == (None if name == "softverify eval" else 1), name  # eval: rollout.torch_threads
        assert "one thread" in a.help, name
    args = build_parser().parse_args(["verify", "in.jsonl", "--threads", "3"])
    assert args.threads == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worldmodel", "eval", "--model", "m", "--cell-line", "k562", "--threads", "0"])
    assert "--threads must be a whole number >= 1, got '0'" in capsys.readouterr().err


def test_readme_command_table_lists_every_command():
    """README's "All commands" table names every command and sub-command the CLI has."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("## All commands"):text.index("\n## ", text.index("## All commands") + 3)]
    cells = [re.split(r"(?<!\\)\|", line)[1] for line in table.splitlines() if line.startswith("| `softverify")]
    named = " ".join(cells).replace("\\|", "|")
    missing = []
    for path, p in _commands(build_parser()):
        if len(path) < 2:
            continue
        cmd = path[1]
        if f"softverify {cmd}" not in named:
            missing.append(" ".join(path))
        elif len(path) == 3 and not re.search(rf"softverify {cmd}[^`]*\b{re.escape(path[2])}\b", named):
            missing.append(" ".join(path))
    assert not missing, "commands missing from README's table:\n" + "\n".join(missing)


def _run(argv: list[str], columns: int = 100) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS=str(columns))
    return subprocess.run([sys.executable, "-m", "softverify.cli", *argv], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


def test_help_config_is_sectioned_wrapped_and_complete():
    """Every TrainConfig key is listed once under its section, no line is wider than the
    terminal (COLUMNS) or 100, and the verifiers section carries every verifier kind and
    its parameters, as `verify --list` prints them."""
    from softverify.config import describe
    from softverify.configbase import config_sections
    from softverify.config import TrainConfig
    from softverify.registry import kinds

    r = _run(["train", "--help-config"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 100
    assert [l[1:-1] for l in lines if l.startswith("[")] == list(config_sections(TrainConfig)) == [
        "model", "data", "rollout", "verifiers", "reward", "algorithm", "learner", "prompt", "trainer"]
    listed = {l.split(" = ")[0].strip() for l in lines if l.startswith("  ") and not l.startswith("   ") and " = " in l}
    for key in (line.split(" = ")[0] for line in describe()):
        assert key in listed or key.startswith("verifiers"), key
    assert {"verifiers", "verifiers[i].kind", "verifiers[i].params"} <= listed
    for kind in kinds():
        assert f"\n  {kind}" in r.stdout, kind
    assert "params: model_dir=None" in r.stdout  # world_model's parameters
    narrow = _run(["train", "--help-config", "rollout"], columns=60)
    assert max(map(len, narrow.stdout.splitlines())) <= 60


def test_help_config_filters_to_one_section_and_names_the_valid_ones():
    r = _run(["train", "--help-config", "rollout"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("[rollout]\n") and "rollout.group_size = 8" in r.stdout
    lines = r.stdout.splitlines()
    assert [l for l in lines if l.startswith("[")] == ["[rollout]"]
    assert all(l.startswith("  rollout.") for l in lines if l.startswith("  ") and not l.startswith("   "))
    lora = _run(["train", "--help-config", "learner.lora"]).stdout
    assert "learner.lora.r = 16" in lora and "learner.lr" not in lora
    ver = _run(["train", "--help-config", "verifiers"]).stdout
    assert "verifiers[i].weight = 1.0" in ver and "world_model" in ver and "\n  rollout." not in ver
    bad = _run(["train", "--help-config", "rolout"])
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == ("softverify train: error: no config section 'rolout' (did you mean 'rollout'?): "
                                  "expected one of model, data, rollout, verifiers, reward, algorithm, learner, "
                                  "prompt, trainer (or a dotted prefix such as rollout.vllm), or no section for all")
    serve = _run(["serve", "--help-config", "limits"])
    assert serve.returncode == 0 and serve.stdout.startswith("[limits]\n") and "limits.max_tokens" in serve.stdout


def test_verify_list_and_help_config_describe_kinds_alike():
    from softverify.verifiers.base import kinds_help

    listed = _run(["verify", "--list"]).stdout
    assert listed.splitlines() == kinds_help(100, policy_note="needs policy: pass --model")
