from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from softverify.bio import perturbqa as pq


def test_fetch_from_mirror_copies_verified_files(pqa_mirror, private_cache):
    paths = pq.fetch(["k562"], kinds=("dir",), mirror=pqa_mirror)
    p = paths[("k562", "dir")]
    assert p.parent == private_cache / "perturbqa"
    assert hashlib.sha256(p.read_bytes()).hexdigest() == pq.SHA256[("k562", "dir")]
    df = pq.read_csv_checked(p)
    assert list(df.columns) == list(pq.COLUMNS)
    assert set(df["split"]) == {"train", "test"}


def test_env_mirror_is_used_and_tables_match_readme(pqa_mirror, monkeypatch):
    monkeypatch.setenv("SOFTVERIFY_DATA_MIRROR", str(pqa_mirror))
    df = pq.load_table("k562", "de")
    # Numbers from the data README: 157,679 rows, 1,831 perturbations, 4,136 genes, 12.7% positive.
    assert len(df) == 157_679
    assert df["pert"].nunique() == 1_831 and df["gene"].nunique() == 4_136
    assert abs(df["label"].mean() - 0.127) < 0.001
    assert (df["cell_line"] == "k562").all()
    # Upstream split is by perturbation: no perturbation is in both.
    assert not set(df.loc[df.split == "train", "pert"]) & set(df.loc[df.split == "test", "pert"])


def test_missing_file_in_mirror(tmp_path):
    (tmp_path / "mirror").mkdir()
    with pytest.raises(FileNotFoundError, match="hepg2-de.csv not found in mirror"):
        pq.fetch_file("hepg2", "de", mirror=tmp_path / "mirror")


def test_missing_mirror_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pq.fetch_file("k562", "de", mirror=tmp_path / "nope")


def test_bad_checksum_names_file_and_hashes(tmp_path, pqa_mirror):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    good = (pqa_mirror / "k562-dir.csv").read_bytes()
    (mirror / "k562-dir.csv").write_bytes(good[:-200])  # truncated
    with pytest.raises(pq.DataIntegrityError, match="bad checksum .*k562-dir.csv"):
        pq.fetch_file("k562", "dir", mirror=mirror)
    assert not (pq.cache_folder() / "k562-dir.csv").exists()


def test_wrong_columns_in_unpinned_file(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    pd.DataFrame({"perturbation": ["A"], "gene": ["B"], "label": [1], "split": ["train"]}).to_csv(
        mirror / "jurkat-de.csv", index=False
    )
    with pytest.warns(UserWarning, match="no pinned sha256"):
        with pytest.raises(pq.DataIntegrityError, match=r"wrong columns \['perturbation'"):
            pq.fetch_file("jurkat", "de", mirror=mirror)


@pytest.mark.parametrize(
    "frame,msg",
    [
        ({"pert": ["A"], "gene": ["B"], "label": [2], "split": ["train"]}, "label values"),
        ({"pert": ["A"], "gene": ["B"], "label": [1], "split": ["val"]}, "split values"),
        ({"pert": ["A"], "gene": [None], "label": [1], "split": ["train"]}, "empty cells"),
    ],
)
def test_bad_values(frame, msg):
    with pytest.raises(pq.DataIntegrityError, match=msg):
        pq.validate_table(pd.DataFrame(frame), "x.csv")


def test_unpinned_valid_file_is_accepted_with_warning(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    pd.DataFrame({"pert": ["A", "C"], "gene": ["B", "D"], "label": [1, 0], "split": ["train", "test"]}).to_csv(
        mirror / "jurkat-de.csv", index=False
    )
    with pytest.warns(UserWarning):
        p = pq.fetch_file("jurkat", "de", mirror=mirror)
    assert len(pq.read_csv_checked(p)) == 2


def test_cell_line_names_are_validated():
    assert pq.parse_cell_lines("K562, rpe1,k562") == ["k562", "rpe1"]
    with pytest.raises(ValueError, match="unknown PerturbQA cell line 'hela'"):
        pq.parse_cell_lines("k562,hela")
    assert pq.upstream_url("jurkat", "dir").endswith("Genentech/PerturbQA/main/perturbqa/datasets/jurkat-dir.csv")
