"""Fixtures for the biology tests: the real data beside the repo, a private cache."""
from __future__ import annotations

from pathlib import Path

import pytest

# CI clones the repo with shared/ beside it: <root>/../shared/data.
DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} not present")
    return DATA


@pytest.fixture(scope="session")
def pqa_mirror(data_root) -> Path:
    return data_root / "perturbqa"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Every test gets an empty cache and no inherited mirror."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SOFTVERIFY_CACHE", str(cache))
    monkeypatch.delenv("SOFTVERIFY_DATA_MIRROR", raising=False)
    return cache


@pytest.fixture(scope="session")
def gene_kb(data_root):
    """The knowledge base built from the full real NCBI/GO files (~4 s, once per session)."""
    from softverify.bio.genes import GeneKB

    g = data_root / "genes"
    return GeneKB.build(
        g / "Homo_sapiens.gene_info.gz", g / "gene2go_human.gz", g / "go-basic.obo.gz",
        g / "gene_summaries_ncbi_uniprot.json",
    )
