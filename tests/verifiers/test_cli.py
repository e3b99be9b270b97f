"""``softverify verify`` and ``softverify coexpr`` through the real CLI entry point."""
from __future__ import annotations

import json

import numpy as np
from _vtools import completion

from softverify.cli import main


def test_verify_list(capsys):
    assert main(["verify", "--list"]) == 0
    out = capsys.readouterr().out
    for k in ("hard", "world_model", "coexpression", "go_rouge", "go_keywords", "go_likelihood", "mention", "format"):
        assert k in out
    assert "go_likelihood" in out and "[needs policy" in out
    assert ":mod:" not in out and "``" not in out
    assert "params: label_key='label'" in out  # each kind lists its parameters with defaults
    assert "params: model_dir=None, threshold='model'" in out
    assert not any(line.rstrip().endswith("...") for line in out.splitlines())  # nothing cut mid-word


def test_verify_jsonl(tmp_path, capsys, wm_dir, coexpr_npz):
    d, tr = wm_dir
    r = tr.iloc[0]
    rows = [
        {"prompt_id": "a", "completion": completion("yes", f"{r.pert} {r.gene}"), "pert": r.pert, "gene": r.gene,
         "label": int(r.label), "task": "de"},
        {"prompt_id": "a", "completion": completion("no"), "pert": r.pert, "gene": r.gene, "label": int(r.label)},
        {"prompt_id": "b", "completion": "no tags", "pert": "CD3D", "gene": "CD3E", "label": 1, "task": "coexpression"},
    ]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(x) + "\n" for x in rows))
    out = tmp_path / "scores.jsonl"
    rc = main(["verify", str(inp), "--out", str(out), "--verifier", "hard",
               "--verifier", f"world_model model_dir={d} weight=0.5",
               "--verifier", f"coexpression matrix={coexpr_npz} name=coexpr", "--verifier", "mention weight=0"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "world_model" in table and "coexpr" in table and "composed reward" in table
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["scores"]["hard"] for x in recs] == [float(r.label == 1), float(r.label == 0), 0.0]
    assert [x["answer"] for x in recs] == ["yes", "no", None]
    assert recs[2]["scores"]["world_model"] is None  # a co-expression question: the world model abstains
    assert recs[2]["scores"]["coexpr"] == 0.0  # unanswered
    assert abs(recs[0]["scores"]["world_model"] + recs[1]["scores"]["world_model"] - 1) < 1e-9


def test_verify_errors(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"question": "q"}\n')
    assert main(["verify", str(inp), "--verifier", "hard"]) == 2
    assert "completion" in capsys.readouterr().err
    inp.write_text('{"completion": "x"}\n')
    assert main(["verify", str(inp), "--verifier", "nope"]) == 2
    assert "unknown verifier kind 'nope'" in capsys.readouterr().err
    assert main(["verify", str(inp), "--verifier", "go_likelihood kb_dir=/nonexistent"]) == 2
    capsys.readouterr()
    assert main(["verify", str(inp), "--verifier", "hard labels=label"]) == 2
    err = capsys.readouterr().err
    assert "verifier 'hard' has no parameter(s) ['labels']; its parameters are label_key='label'" in err
    assert "HardLabelVerifier" not in err
    # --verifier values are read like --set values: a spec field by its type, text YAML cannot parse kept as written
    assert main(["verify", str(inp), "--verifier", "hard weight=x threshold=2"]) == 2
    err = capsys.readouterr().err
    assert "invalid --verifier 'hard weight=x threshold=2':" in err and "weight: Input should be a valid number" in err
    assert "threshold: Input should be less than or equal to 1 (got 2)" in err
    assert main(["verify", str(inp), "--verifier", "format max_chars=abc"]) == 2  # a number parameter given text
    assert ("verifier 'format' parameter max_chars='abc' is not a number (its default is 4000); its parameters are "
            "max_chars=4000") in capsys.readouterr().err
    # placement is a spec field one level down; the old flat key names its new place
    assert main(["verify", str(inp), "--verifier", "hard num_cpus=1"]) == 2
    assert "num_cpus moved to placement.num_cpus" in capsys.readouterr().err
    assert main(["verify", str(inp), "--verifier", "hard placement.num_cpus=0.5 'placement.resources={a: 1}'"]) == 0
    capsys.readouterr()
    out = tmp_path / "o.jsonl"
    assert main(["verify", str(inp), "--verifier", "hard name=yes label_key=[1,", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["scores"] == {"yes": None}  # no row has a '[1,' field: it abstains


def test_verify_labels_in_words(tmp_path, capsys):
    """"label": "yes" is a label; "maybe" is an error naming the line, the field and what is accepted."""
    inp = tmp_path / "in.jsonl"
    rows = [{"completion": completion("yes"), "label": "yes"}, {"completion": completion("yes"), "label": "no"},
            {"completion": completion("no"), "label": False}]
    inp.write_text("".join(json.dumps(x) + "\n" for x in rows))
    out = tmp_path / "o.jsonl"
    assert main(["verify", str(inp), "--verifier", "hard", "--out", str(out)]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["answer"], r["label"], r["scores"]["hard"]) for r in recs] == [("yes", 1, 1.0), ("yes", 0, 0.0),
                                                                             ("no", 0, 1.0)]
    inp.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"completion": "x", "label": "maybe"}) + "\n")
    assert main(["verify", str(inp), "--verifier", "hard"]) == 2
    err = capsys.readouterr().err
    assert f"{inp}:2: field 'label': label 'maybe' is not a yes/no label; expected 0/1, true/false" in err


def test_coexpr_cli(tmp_path, data_root, capsys):
    out = tmp_path / "m.npz"
    assert main(["coexpr", "build", "--h5ad", str(data_root / "singlecell" / "decoupler_pbmc3k_160cells.h5ad"),
                 "--out", str(out), "--method", "spearman", "--max-genes", "300"]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert z["scores"].shape == (300, 300) and z["genes"].dtype.kind == "U"
    q = tmp_path / "q.jsonl"
    assert main(["coexpr", "questions", "--matrix", str(out), "--out", str(q), "--n", "40"]) == 0
    rows = [json.loads(x) for x in q.read_text().splitlines()]
    assert len(rows) == 40 and sum(r["label"] for r in rows) == 20 and rows[0]["task"] == "coexpression"


def test_extra_tasks_mixed_into_training(tmp_path, coexpr_npz, data_root):
    from softverify.config import build_config
    from softverify.data import load_prompts

    cfg = build_config({"data": {"mirror": str(data_root / "perturbqa"), "max_prompts": 30,
                                 "extra_tasks": [{"matrix": str(coexpr_npz), "num_prompts": 10}]}})
    train = load_prompts(cfg.data, "train")
    assert len(train) == 40 and sorted(set(train["task"])) == ["coexpression", "de"]
    assert len(load_prompts(cfg.data, "test", 8)) == 8  # eval stays on the main task


def test_every_extra_task_name_the_config_accepts_has_its_rows():
    from typing import get_args

    from softverify.config import ExtraTask
    from softverify.data import EXTRA_TASK_ROWS

    assert set(get_args(ExtraTask.model_fields["task"].annotation)) == set(EXTRA_TASK_ROWS)


def test_coexpr_build_names_a_missing_or_bad_h5ad(tmp_path, capsys):
    missing = tmp_path / "nope.h5ad"
    assert main(["coexpr", "build", "--h5ad", str(missing), "--out", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert f"AnnData file {str(missing)!r} not found" in err and "errno" not in err.lower()
    bad = tmp_path / "bad.h5ad"
    bad.write_text("not hdf5")
    assert main(["coexpr", "build", "--h5ad", str(bad), "--out", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert f"{str(bad)!r} is not a readable AnnData .h5ad file: it is not HDF5" in err and "signature" not in err
    assert main(["coexpr", "build", "--h5ad", str(tmp_path), "--out", str(tmp_path / "m.npz")]) == 2
    assert f"AnnData file {str(tmp_path)!r} is a directory, not an .h5ad file" in capsys.readouterr().err


def test_worldmodel_eval_and_fit_report_all_rows_and_where_they_saved(tmp_path, wm_dir, data_root, capsys):
    """A model that covers part of the rows reports its covered-rows figures beside all rows' (the
    uncovered answered no), with the coverage; fit prints where it saved the model."""
    d, _ = wm_dir
    mirror = str(data_root / "perturbqa")
    assert main(["worldmodel", "eval", "--model", str(d), "--cell-line", "k562", "--from", mirror]) == 0
    cap = capsys.readouterr()
    m = json.loads(cap.out)
    assert 0 < m["coverage"] < 1 and m["all_rows"]["uncovered_as"] == "no (p = 0)"
    assert (f"covered rows ({m['coverage']:.1%} of {m['n']}): AUROC {m['auroc']:.3f}, MCC {m['mcc']:.3f}; "
            f"all rows (uncovered answered no (p = 0)): AUROC {m['all_rows']['auroc']:.3f}") in cap.err
    out = tmp_path / "gbdt"
    assert main(["worldmodel", "fit", "--model", "gbdt", "--cell-lines", "rpe1", "--max-rows", "3000", "--from", mirror,
                 "--out", str(out), "--quiet"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["saved"] == str(out) and f"world model saved to {out}" in cap.err
    assert (out / "worldmodel.json").is_file()
