"""PerturbQA differential-expression tables: fetch, mirror, cache, validate, read.

PerturbQA (Wu et al., ICLR 2025) ships one CSV per cell line and task in
``github.com/Genentech/PerturbQA``, folder ``perturbqa/datasets/``:
``{cell}-de.csv`` (does knocking down ``pert`` change ``gene``? label 1 = yes) and
``{cell}-dir.csv`` (direction of change of the DE pairs). Both have the columns
``pert,gene,label,split``; ``split`` is the upstream train/test split by perturbation.

Files are located in this order: an explicit mirror directory (``--from DIR`` or
``DataConfig.mirror``), ``$SOFTVERIFY_DATA_MIRROR``, the cache
(``<cache>/perturbqa``), and finally a download from the upstream URL pinned to one
commit. Every file is checked against its pinned sha256 and for the expected columns,
so a truncated download or a CSV from another source fails loudly instead of quietly
training on wrong labels.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zlib
from functools import lru_cache
from pathlib import Path

import pandas as pd

from softverify.configbase import cache_dir
from softverify.infra.fsutil import atomic_file

CELL_LINES: tuple[str, ...] = ("k562", "rpe1", "hepg2", "jurkat")
KINDS: tuple[str, ...] = ("de", "dir")
COLUMNS: tuple[str, ...] = ("pert", "gene", "label", "split")
SPLITS: tuple[str, ...] = ("train", "test")
MIRROR_ENV = "SOFTVERIFY_DATA_MIRROR"

# The upstream repository at one commit (2025-03-04, "Updating to arXiv paper URL"): a later
# change upstream cannot turn the pins below into a failure for every new user.
UPSTREAM_COMMIT = "13531e834f4aa4084472bccf7c11c02984e146f2"
UPSTREAM_BASE = f"https://raw.githubusercontent.com/Genentech/PerturbQA/{UPSTREAM_COMMIT}/perturbqa/datasets"

# sha256 of every upstream table at UPSTREAM_COMMIT (computed from the files of that commit;
# the K562/RPE1/HepG2 ones also match the copies the tests read).
SHA256: dict[tuple[str, str], str] = {
    ("k562", "de"): "e6ab095f3f970bb29f48427414904136785e8cd4945496f8d9a8fa6eab35ee67",
    ("k562", "dir"): "84a0bc9631b33b8720663ed69506a316dad0f686a51f702f277914cc722000f4",
    ("rpe1", "de"): "a66a86aac5db458e0703bccf7f2d638769400a7ccb9f2615cd9421c106b748ca",
    ("rpe1", "dir"): "25fa0b37c7e86cd73e8135b83513ea9d96c55e5a6c3f222ffbb531b91ab0fb0c",
    ("hepg2", "de"): "f94045fb44dcca4af9c69bee5c87de624590061a1123d55d9ee42a9c1ca97932",
    ("hepg2", "dir"): "8c642ab6e6996887dce6c774d5fc58546970ba9216a636c7547b5039062a2cc3",
    ("jurkat", "de"): "cf993f77015bd7df9d71ce9cf1170f6c8e64a571dc6f9ba0aef411ffb103eec5",
    ("jurkat", "dir"): "8e17055a5bbf8c2751317db5284a9e793a2dc5aaccef0afbcdaf87daabc45709",
}

#: What ``data fetch`` gets by default: the lines softverify trains and evaluates on (the
#: README's mirror holds them). Jurkat, pinned like the others, is fetched when named.
DEFAULT_CELL_LINES: tuple[str, ...] = ("k562", "rpe1", "hepg2")


class DataIntegrityError(ValueError):
    """A data file exists but is not what it should be (checksum, columns, values)."""


def check_cell_line(cell: str) -> str:
    """Normalise and validate a cell-line name (case-insensitive)."""
    c = str(cell).strip().lower()
    if c not in CELL_LINES:
        raise ValueError(f"unknown PerturbQA cell line {cell!r}; expected one of {list(CELL_LINES)}")
    return c


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown PerturbQA table kind {kind!r}; expected one of {list(KINDS)}")
    return kind


def parse_cell_lines(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"k562,rpe1"`` or a list -> validated, de-duplicated, order kept."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for it in items:
        if str(it).strip():
            c = check_cell_line(it)
            if c not in out:
                out.append(c)
    if not out:
        raise ValueError(f"no cell lines given (got {text!r}); expected some of {list(CELL_LINES)}")
    return out


def file_name(cell: str, kind: str = "de") -> str:
    return f"{check_cell_line(cell)}-{check_kind(kind)}.csv"


def upstream_url(cell: str, kind: str = "de") -> str:
    return f"{UPSTREAM_BASE}/{file_name(cell, kind)}"


def cache_folder(cache: str | os.PathLike | None = None) -> Path:
    d = cache_dir(str(cache) if cache else None) / "perturbqa"
    d.mkdir(parents=True, exist_ok=True)
    return d


def mirror_folder(mirror: str | os.PathLike | None = None) -> Path | None:
    """The mirror directory to read from: explicit value, else $SOFTVERIFY_DATA_MIRROR, else None."""
    m = mirror or os.environ.get(MIRROR_ENV) or None
    if m is None:
        return None
    p = Path(m).expanduser()
    if not p.is_dir():
        src = "mirror" if mirror else f"${MIRROR_ENV}"
        raise FileNotFoundError(f"PerturbQA {src} directory {str(p)!r} does not exist")
    return p


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: Path, cell: str, kind: str, expected: str | None = None) -> None:
    """Raise :class:`DataIntegrityError` when ``path`` does not match the pinned sha256."""
    want = expected or SHA256[(cell, kind)]
    got = sha256_of(path)
    if got != want:
        raise DataIntegrityError(
            f"bad checksum for {str(path)!r}: sha256 {got} but expected {want} "
            f"(the file is truncated, modified or not the upstream {file_name(cell, kind)}). If you trust this "
            f"copy, accept it knowingly: softverify data fetch perturbqa --cell-lines {cell} --kinds {kind} "
            f"--sha256 {got}"
        )


def validate_table(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check columns and values of a PerturbQA table; return it with clean dtypes."""
    cols = list(df.columns)
    if sorted(cols) != sorted(COLUMNS):
        raise DataIntegrityError(
            f"{source}: wrong columns {cols}; expected exactly {list(COLUMNS)}"
        )
    if df.empty:
        raise DataIntegrityError(f"{source}: the table has no rows")
    if df[["pert", "gene", "label", "split"]].isna().any().any():
        raise DataIntegrityError(f"{source}: empty cells in pert/gene/label/split")
    labels = set(pd.unique(df["label"]))
    if not labels <= {0, 1}:
        raise DataIntegrityError(f"{source}: label values {sorted(map(str, labels))}; expected 0/1")
    splits = set(pd.unique(df["split"]))
    if not splits <= set(SPLITS):
        raise DataIntegrityError(f"{source}: split values {sorted(splits)}; expected {list(SPLITS)}")
    out = df[list(COLUMNS)].copy()
    out["pert"] = out["pert"].astype(str)
    out["gene"] = out["gene"].astype(str)
    out["label"] = out["label"].astype("int8")
    return out


def read_csv_checked(path: Path) -> pd.DataFrame:
    """Read a PerturbQA CSV and validate it (a parse failure is a :class:`DataIntegrityError`)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"PerturbQA table {str(path)!r} not found")
    try:
        df = pd.read_csv(path, dtype={"pert": str, "gene": str, "split": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError,
            zlib.error) as e:  # OSError: e.g. a '.gz' name over bytes that are not gzip
        raise DataIntegrityError(f"{str(path)!r} is not a readable CSV: {e}") from None
    return validate_table(df, repr(str(path)))


def _copy_atomic(src: Path, dest: Path) -> None:
    with atomic_file(dest) as tmp:
        shutil.copyfile(src, tmp)


def _download_atomic(url: str, dest: Path, timeout: float = 60.0) -> None:
    try:
        with atomic_file(dest) as tmp, open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise FileNotFoundError(f"could not download {url}: {e} (use --from DIR or ${MIRROR_ENV} offline)") from None


def fetch_file(
    cell: str,
    kind: str = "de",
    mirror: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    force: bool = False,
    sha256: str | None = None,
) -> Path:
    """Put one table into the cache (copy from the mirror or download), verified; return its path."""
    cell, kind = check_cell_line(cell), check_kind(kind)
    dest = cache_folder(cache) / file_name(cell, kind)
    if dest.is_file() and not force:
        verify_checksum(dest, cell, kind, sha256)
        return dest
    src_dir = mirror_folder(mirror)
    if src_dir is not None:
        src = src_dir / file_name(cell, kind)
        if not src.is_file():
            raise FileNotFoundError(
                f"{file_name(cell, kind)} not found in mirror {str(src_dir)!r} "
                f"(expected the upstream file name {str(src)!r})"
            )
        verify_checksum(src, cell, kind, sha256)
        read_csv_checked(src)
        _copy_atomic(src, dest)
    else:
        _download_atomic(upstream_url(cell, kind), dest)
        try:
            verify_checksum(dest, cell, kind, sha256)
            read_csv_checked(dest)
        except DataIntegrityError:
            dest.unlink(missing_ok=True)
            raise
    return dest


def fetch(
    cell_lines: list[str] | str = DEFAULT_CELL_LINES,
    kinds: tuple[str, ...] = KINDS,
    mirror: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    force: bool = False,
) -> dict[tuple[str, str], Path]:
    """``softverify data fetch perturbqa``: every requested table into the cache."""
    return {
        (c, k): fetch_file(c, k, mirror=mirror, cache=cache, force=force)
        for c in parse_cell_lines(cell_lines)
        for k in kinds
    }


def locate(
    cell: str, kind: str = "de", mirror: str | os.PathLike | None = None, cache: str | os.PathLike | None = None
) -> Path:
    """Path of a verified table to read: the mirror file in place, else the cache (fetching if needed).

    Reading the mirror in place avoids copying ~10 MB into every test's temp cache.
    """
    cell, kind = check_cell_line(cell), check_kind(kind)
    src_dir = mirror_folder(mirror)
    if src_dir is not None:
        src = src_dir / file_name(cell, kind)
        if not src.is_file():
            raise FileNotFoundError(f"{file_name(cell, kind)} not found in mirror {str(src_dir)!r}")
        _verify_cached(str(src), src.stat().st_mtime_ns, src.stat().st_size, cell, kind)
        return src
    return fetch_file(cell, kind, cache=cache)


@lru_cache(maxsize=64)
def _verify_cached(path: str, mtime_ns: int, size: int, cell: str, kind: str) -> None:
    verify_checksum(Path(path), cell, kind)


@lru_cache(maxsize=16)
def _read_cached(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    return read_csv_checked(Path(path))


def load_table(
    cell: str, kind: str = "de", mirror: str | os.PathLike | None = None, cache: str | os.PathLike | None = None
) -> pd.DataFrame:
    """One validated table with a ``cell_line`` column added (memoised per file version)."""
    p = locate(cell, kind, mirror=mirror, cache=cache)
    st = p.stat()
    df = _read_cached(str(p), st.st_mtime_ns, st.st_size).copy()
    df["cell_line"] = check_cell_line(cell)
    return df


def load_tables(
    cell_lines: list[str] | str, kind: str = "de", mirror: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Several cell lines' tables stacked (columns pert, gene, label, split, cell_line)."""
    frames = [load_table(c, kind, mirror=mirror, cache=cache) for c in parse_cell_lines(cell_lines)]
    return pd.concat(frames, ignore_index=True)
