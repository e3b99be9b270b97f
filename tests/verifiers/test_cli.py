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
    assert "go_likelihood" in out and "[needs policy]" in out


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
