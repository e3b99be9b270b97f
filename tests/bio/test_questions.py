from __future__ import annotations

import re

import numpy as np
import pytest

from softverify.bio import questions as q
from softverify.config import ConfigError, DataConfig

ANSWER_TAGS = re.compile(r"<answer>.*yes.*no.*</answer>", re.S)


def cfg(mirror, **kw) -> DataConfig:
    base = dict(cell_lines=["k562"], mirror=str(mirror), max_prompts=200)
    base.update(kw)
    return DataConfig(**base)


def test_columns_types_and_prompt_format(pqa_mirror):
    ds = q.load_questions(cfg(pqa_mirror), "train", limit=40)
    assert ds.column_names == list(q.COLUMNS)
    assert len(ds) == 40
    row = ds[0]
    assert row["system"] == ""  # none of its own: asked with the prompt style's system prompt
    from softverify.task.prompts import DIRECT_SYSTEM_PROMPT, row_messages

    assert row_messages(row, DIRECT_SYSTEM_PROMPT)[0]["content"] == DIRECT_SYSTEM_PROMPT
    rbio = row_messages(row)[0]["content"]  # no style given: the rbio1 prompt, its layout spelt out
    assert "<think>" in rbio and ANSWER_TAGS.search(rbio)
    assert row["pert"] in row["question"] and row["gene"] in row["question"] and "K562" in row["question"]
    assert row["task"] == "de" and row["cell_line"] == "k562"
    assert isinstance(row["label"], int) and isinstance(row["negated"], bool)
    assert len(set(ds["prompt_id"])) == len(ds)


def test_labels_match_the_table_and_negation_flips(pqa_mirror):
    from softverify.bio.perturbqa import load_table

    table = load_table("k562", "de", mirror=pqa_mirror).set_index(["pert", "gene"])["label"]
    ds = q.load_questions(cfg(pqa_mirror, negated_fraction=0.5), "train", limit=200)
    negs = np.array(ds["negated"])
    assert 0.3 < negs.mean() < 0.7
    for r in ds:
        de = int(table.loc[(r["pert"], r["gene"])])
        assert r["label"] == (1 - de if r["negated"] else de)
        assert q.TEMPLATES[r["template"]][1] == r["negated"]
        if r["negated"]:
            assert "unchanged" in r["question"] or "stay the same" in r["question"]


def test_balanced_sampling_and_unbalanced(pqa_mirror):
    ds = q.load_questions(cfg(pqa_mirror), "test", limit=100)
    assert sum(ds["label"]) == 50
    raw = q.load_questions(cfg(pqa_mirror, balance=False), "test", limit=400)
    assert sum(raw["label"]) / 400 < 0.3  # ~13% positive when not balanced


def test_deterministic_per_seed_and_split(pqa_mirror):
    a = q.load_questions(cfg(pqa_mirror, negated_fraction=0.3), "train", limit=30)
    b = q.load_questions(cfg(pqa_mirror, negated_fraction=0.3), "train", limit=30)
    c = q.load_questions(cfg(pqa_mirror, negated_fraction=0.3, seed=1), "train", limit=30)
    assert a["prompt_id"] == b["prompt_id"] and a["question"] == b["question"]
    assert a["prompt_id"] != c["prompt_id"]


def test_max_prompts_is_the_default_limit(pqa_mirror):
    assert len(q.load_questions(cfg(pqa_mirror, max_prompts=12), "train")) == 12


def test_upstream_splits_do_not_share_perturbations(pqa_mirror):
    tr = q.question_frame(cfg(pqa_mirror), "train", limit=500)
    te = q.question_frame(cfg(pqa_mirror), "test", limit=500)
    assert not set(tr["pert"]) & set(te["pert"])


def test_leave_one_cell_line_out(pqa_mirror):
    c = cfg(pqa_mirror, cell_lines=["rpe1", "hepg2"], holdout_cell_line="k562")
    tr = q.question_frame(c, "loco_train", limit=200)
    te = q.question_frame(c, "loco_test", limit=100)
    assert set(tr["cell_line"]) == {"rpe1", "hepg2"}
    assert set(te["cell_line"]) == {"k562"}
    # Default held-out line: the last listed.
    d = cfg(pqa_mirror, cell_lines=["k562", "rpe1"])
    assert set(q.question_frame(d, "loco_test", limit=20)["cell_line"]) == {"rpe1"}
    with pytest.raises(ConfigError, match="at least two"):
        q.question_frame(cfg(pqa_mirror), "loco_train")


def test_held_out_genes_never_seen_in_training(pqa_mirror):
    c = cfg(pqa_mirror, holdout_gene_fraction=0.3, max_prompts=None, balance=False)
    tr = q.select_split(c, "gene_train")
    te = q.select_split(c, "gene_test")
    seen = set(tr["gene"]) | set(tr["pert"])
    assert len(te) > 1000 and len(tr) > 1000
    assert not set(te["gene"]) & seen
    frac = te["gene"].nunique() / (te["gene"].nunique() + tr["gene"].nunique())
    assert 0.2 < frac < 0.4


def test_bad_split_and_cell_line(pqa_mirror):
    with pytest.raises(ConfigError, match="unknown data split 'validation'"):
        q.load_questions(cfg(pqa_mirror), "validation")
    with pytest.raises(ConfigError, match="hela"):
        q.load_questions(cfg(pqa_mirror, cell_lines=["hela"]), "train")


def test_save_parquet_roundtrip(pqa_mirror, tmp_path):
    import datasets

    ds = q.load_questions(cfg(pqa_mirror), "test", limit=10)
    p = q.save_questions(ds, tmp_path / "out" / "q.parquet")
    back = datasets.Dataset.from_parquet(str(p))
    assert back["question"] == ds["question"]

