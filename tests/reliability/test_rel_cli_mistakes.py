"""User mistakes through the real `softverify` command (subprocesses, run in parallel).

(Config overrides, missing files and unknown names are fuzzed in-process in
test_rel_fuzz_inputs.py; here a few of each kind go through the real entry point.)
Each invocation must exit 2 with a one-line ``softverify <cmd>: error: ...`` naming the
problem, print no traceback, and leave no half-written output behind.
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from relutil import REPO, cli_env

pytestmark = pytest.mark.timeout(600)


def _cases(tmp: Path, model: Path) -> list[tuple[list[str], str, list[Path]]]:
    """(argv, expected text in the error, paths that must not exist afterwards)"""
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_bytes(b"\xff\xfe model: {path: x}")
    sweep = tmp / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"search": {"learner.lr": {"uniform": [1.0, 0.1]}}}))
    gi = tmp / "gene_info"
    gi.write_text("#tax_id\tGeneID\tSymbol\tSynonyms\tdbXrefs\tchromosome\tmap_location\tdescription\t"
                  "type_of_gene\tFull_name_from_nomenclature_authority\n9606\tnot-an-id\tTP53\t-\t-\t17\t17p13\td\tprotein-coding\tx\n")
    g2go = tmp / "gene2go"
    g2go.write_text("#tax_id\tGeneID\tGO_ID\tEvidence\tQualifier\tGO_term\tCategory\n9606\t7157\tGO:1\tIDA\t-\tt\tProcess\n")
    obo = tmp / "go.obo.gz"
    obo.write_bytes(b"\x1f\x8b" + os.urandom(64))
    h5 = tmp / "cells.h5ad"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(256))
    csv_gz = tmp / "mirror"
    csv_gz.mkdir()
    (csv_gz / "k562-de.csv").write_bytes(gzip.compress(b"pert,gene,label,split\n"))
    out = tmp / "outs"
    return [
        (["train", "--config", str(bad_yaml), "--output-dir", str(out / "t1")], "not valid YAML", [out / "t1"]),
        (["train", "--set", "rollout.group_size=1", "--output-dir", str(out / "t2")], "rollout.group_size", [out / "t2"]),
        (["train", "--model", str(model), "--resume", "--output-dir", str(out / "t5")], "no checkpoint", []),
        (["sweep", str(sweep), "--check"], "search.learner.lr", []),
        (["genes", "build", "--gene-info", str(gi), "--gene2go", str(g2go), "--obo", str(obo), "--out", str(out / "kb")],
         "not-an-id", [out / "kb"]),
        (["coexpr", "build", "--h5ad", str(h5), "--out", str(out / "m.npz")], "not a readable AnnData", [out / "m.npz"]),
        (["data", "questions", "--cell-lines", "k562", "--from", str(csv_gz)], "k562-de.csv", []),
        (["serve", str(model), "--port", "70000"], "port", []),
    ]


def test_user_mistakes_exit_2_without_traceback(tmp_path, tiny_model_dir):
    cases = _cases(tmp_path, tiny_model_dir)
    env = dict(cli_env(), SOFTVERIFY_CACHE=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-m", "softverify.cli", *argv], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for argv, _, _ in cases]
    failures = []
    for (argv, expect, absent), p in zip(cases, procs):
        out, err = p.communicate(timeout=500)
        cmd = argv[0]
        problems = []
        if p.returncode != 2:
            problems.append(f"exit {p.returncode}")
        if "Traceback" in out + err:
            problems.append("traceback")
        if f"softverify {cmd}: error:" not in err or expect not in err:
            problems.append(f"message lacks {expect!r}")
        problems += [f"{a} was written" for a in absent if a.exists()]
        if problems:
            failures.append(f"softverify {' '.join(argv)}: {problems}\n{err[-1500:]}")
    assert not failures, "\n\n".join(failures)
