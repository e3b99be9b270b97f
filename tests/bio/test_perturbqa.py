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


def test_wrong_columns_in_a_knowingly_accepted_copy(tmp_path):
    """--sha256 accepts a copy's digest, never its content: the columns are still checked."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    f = mirror / "jurkat-de.csv"
    pd.DataFrame({"perturbation": ["A"], "gene": ["B"], "label": [1], "split": ["train"]}).to_csv(f, index=False)
    with pytest.raises(pq.DataIntegrityError, match=r"wrong columns \['perturbation'"):
        pq.fetch_file("jurkat", "de", mirror=mirror, sha256=pq.sha256_of(f))


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


def test_jurkat_is_pinned_like_the_others(tmp_path):
    """A well-formed Jurkat table that is not the upstream one is refused, naming both digests."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    f = mirror / "jurkat-de.csv"
    pd.DataFrame({"pert": ["A", "C"], "gene": ["B", "D"], "label": [1, 0], "split": ["train", "test"]}).to_csv(
        f, index=False)
    with pytest.raises(pq.DataIntegrityError) as e:
        pq.fetch_file("jurkat", "de", mirror=mirror)
    assert pq.SHA256[("jurkat", "de")] in str(e.value) and pq.sha256_of(f) in str(e.value)
    assert "--sha256" in str(e.value)  # how to override knowingly
    assert all(pq.SHA256[(c, k)] for c in pq.CELL_LINES for k in pq.KINDS)


def test_cell_line_names_are_validated():
    assert pq.parse_cell_lines("K562, rpe1,k562") == ["k562", "rpe1"]
    with pytest.raises(ValueError, match="unknown PerturbQA cell line 'hela'"):
        pq.parse_cell_lines("k562,hela")
    # pinned to one upstream commit, not a branch that can move under the checksums
    assert pq.upstream_url("jurkat", "dir") == ("https://raw.githubusercontent.com/Genentech/PerturbQA/"
                                                 "13531e834f4aa4084472bccf7c11c02984e146f2/perturbqa/datasets/jurkat-dir.csv")


def test_data_fetch_defaults_succeed_from_a_mirror_and_say_what_they_fetched(pqa_mirror, private_cache, capsys):
    """The CLI's default cell lines (K562, RPE1, HepG2) are all in the mirror: exit 0, and every
    file is reported with its source and digest."""
    from softverify import cli

    assert cli.main(["data", "fetch", "perturbqa", "--from", str(pqa_mirror)]) == 0
    out = capsys.readouterr().out
    for cell in pq.DEFAULT_CELL_LINES:
        for kind in pq.KINDS:
            name = pq.file_name(cell, kind)
            assert f"from   {pqa_mirror / name}" in out and f"sha256 {pq.SHA256[(cell, kind)]} (matches the pin)" in out
    assert "jurkat" not in pq.DEFAULT_CELL_LINES and "jurkat" not in out
    # jurkat by name from a mirror without it: one clear line naming the file
    assert cli.main(["data", "fetch", "perturbqa", "--cell-lines", "jurkat", "--from", str(pqa_mirror)]) == 2
    assert "jurkat-de.csv not found in mirror" in capsys.readouterr().err


def test_a_trusted_copy_with_another_digest_is_accepted_only_knowingly(tmp_path, pqa_mirror, capsys):
    from softverify import cli

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "k562-dir.csv").write_bytes((pqa_mirror / "k562-dir.csv").read_bytes().replace(b"\r\n", b"\n") + b"")
    changed = (mirror / "k562-dir.csv")
    lines = changed.read_text().splitlines()
    changed.write_text("\n".join(lines[:-1]) + "\n")  # one row fewer: a different but valid table
    got = hashlib.sha256(changed.read_bytes()).hexdigest()
    base = ["data", "fetch", "perturbqa", "--cell-lines", "k562", "--kinds", "dir", "--from", str(mirror)]
    assert cli.main(base) == 2
    err = capsys.readouterr().err
    assert f"sha256 {got} but expected {pq.SHA256[('k562', 'dir')]}" in err and f"--sha256 {got}" in err
    assert cli.main(base + ["--sha256", got]) == 0
    assert f"sha256 {got} (accepted knowingly (--sha256))" in capsys.readouterr().out
