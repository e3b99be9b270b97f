"""Every command's --help is complete and true: each option explains itself, and the
files an example names exist in the project."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from softverify.cli import build_parser

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
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
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


def test_eval_names_its_model_once():
    ev = dict((" ".join(k), v) for k, v in _commands(build_parser()))["softverify eval"]
    assert "--model" not in {o for a in ev._actions for o in a.option_strings}
    assert ev.description and "forced" in ev.description


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
