"""Readers for the public gene-knowledge formats: NCBI ``gene_info``, NCBI ``gene2go``, GO OBO.

Each reader takes the file as users download it (plain or ``.gz``) and returns a tidy
pandas frame; a file with the wrong header or no usable rows raises ``ValueError``
naming the file and the expected columns, so a swapped argument fails at build time.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from pathlib import Path

import pandas as pd

GENE_INFO_COLUMNS = (
    "#tax_id", "GeneID", "Symbol", "Synonyms", "dbXrefs", "chromosome", "map_location",
    "description", "type_of_gene", "Full_name_from_nomenclature_authority",
)
GENE2GO_COLUMNS = ("#tax_id", "GeneID", "GO_ID", "Evidence", "Qualifier", "GO_term", "Category")
ASPECTS = {"biological_process": "BP", "molecular_function": "MF", "cellular_component": "CC"}
CATEGORY_TO_ASPECT = {"Process": "BP", "Function": "MF", "Component": "CC"}
ASPECT_NAMES = {"BP": "biological process", "MF": "molecular function", "CC": "cellular component"}


def _open_text(path: str | os.PathLike) -> io.TextIOBase:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"gene data file {str(p)!r} not found")
    with open(p, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(p, "rt", encoding="utf-8") if gz else open(p, encoding="utf-8")


def _read_tsv(path: str | os.PathLike, needed: tuple[str, ...], what: str) -> pd.DataFrame:
    with _open_text(path) as f:
        try:
            df = pd.read_csv(f, sep="\t", dtype=str, na_values=["-"], keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{what} file {str(path)!r} could not be parsed: {e}") from None
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(
            f"{str(path)!r} is not an NCBI {what} file: missing columns {missing} "
            f"(has {list(df.columns)[:8]}); expected {list(needed)}"
        )
    return df


def _int_ids(col: pd.Series, path: str | os.PathLike, what: str, name: str) -> "pd.Series":
    """A column of integer ids, or ``ValueError`` naming the file and the first bad value."""
    ids = pd.to_numeric(col, errors="coerce")
    bad = ids.isna() | (ids != ids.round())
    if bad.any():
        raise ValueError(f"{what} file {str(path)!r}: column {name} must hold integer ids; "
                         f"got {col[bad].iloc[0]!r} ({int(bad.sum())} bad rows)")
    return ids.astype("int64")


def _split_bar(text: object) -> list[str]:
    if not isinstance(text, str) or not text:
        return []
    return [t for t in text.split("|") if t and t != "-"]


def _ensembl(xrefs: object) -> str | None:
    for x in _split_bar(xrefs):
        if x.startswith("Ensembl:"):
            return x.split(":", 1)[1]
    return None


def read_gene_info(path: str | os.PathLike, tax_id: str = "9606") -> pd.DataFrame:
    """NCBI gene_info -> one row per gene: gene_id, symbol, synonyms (list), full_name, type, ..."""
    df = _read_tsv(path, GENE_INFO_COLUMNS, "gene_info")
    df = df[df["#tax_id"] == tax_id]
    if df.empty:
        raise ValueError(f"gene_info file {str(path)!r} has no rows for tax_id {tax_id}")
    full = df["Full_name_from_nomenclature_authority"].where(
        df["Full_name_from_nomenclature_authority"].notna(), df["description"]
    )
    return pd.DataFrame({
        "gene_id": _int_ids(df["GeneID"], path, "gene_info", "GeneID").to_numpy(),
        "symbol": df["Symbol"].to_numpy(),
        "synonyms": [_split_bar(s) for s in df["Synonyms"]],
        "full_name": full.fillna("").to_numpy(),
        "type": df["type_of_gene"].fillna("unknown").to_numpy(),
        "chromosome": df["chromosome"].fillna("").to_numpy(),
        "map_location": df["map_location"].fillna("").to_numpy(),
        "ensembl": [_ensembl(x) for x in df["dbXrefs"]],
    }).reset_index(drop=True)


def read_gene2go(path: str | os.PathLike, tax_id: str = "9606") -> pd.DataFrame:
    """NCBI gene2go -> (gene_id, go_id, aspect, evidence) with NOT-qualified and ND rows dropped.

    A ``NOT`` qualifier means the gene was shown *not* to have the function; keeping it
    would teach the knowledge verifier the opposite fact.
    """
    df = _read_tsv(path, GENE2GO_COLUMNS, "gene2go")
    df = df[df["#tax_id"] == tax_id]
    neg = df["Qualifier"].fillna("").str.startswith("NOT")
    df = df[~neg]
    if df.empty:
        raise ValueError(f"gene2go file {str(path)!r} has no usable rows for tax_id {tax_id}")
    out = pd.DataFrame({
        "gene_id": _int_ids(df["GeneID"], path, "gene2go", "GeneID").to_numpy(),
        "go_id": df["GO_ID"].to_numpy(),
        "aspect": df["Category"].map(CATEGORY_TO_ASPECT).to_numpy(),
        "evidence": df["Evidence"].fillna("").to_numpy(),
    })
    # ND ("no biological data") rows only annotate the three root terms: no knowledge.
    out = out[out["evidence"] != "ND"].drop_duplicates()
    merged: dict[tuple[int, str, str], set[str]] = {}
    for key, ev in zip(zip(out["gene_id"], out["go_id"], out["aspect"]), out["evidence"]):
        merged.setdefault(key, set()).add(ev)
    keys = sorted(merged)
    return pd.DataFrame({
        "gene_id": [k[0] for k in keys],
        "go_id": [k[1] for k in keys],
        "aspect": [k[2] for k in keys],
        "evidence": [",".join(sorted(merged[k])) for k in keys],
    })


def read_obo(path: str | os.PathLike) -> pd.DataFrame:
    """GO OBO 1.2 -> one row per term (go_id, name, aspect, definition, parents, obsolete) plus alt ids.

    ``alt_id`` lines become extra rows pointing at the primary term (``primary`` column),
    because gene2go can still use a merged term's old id.
    """
    try:
        return _read_obo(path)
    except (UnicodeDecodeError, EOFError, zlib.error) as e:
        raise ValueError(f"OBO file {str(path)!r} could not be read: {e}") from None
    except OSError as e:  # e.g. gzip.BadGzipFile; a missing file stays FileNotFoundError
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"OBO file {str(path)!r} could not be read: {e}") from None


def _read_obo(path: str | os.PathLike) -> pd.DataFrame:
    rows: list[dict] = []
    term: dict | None = None
    with _open_text(path) as f:
        first = f.readline()
        if not first.startswith("format-version:"):
            raise ValueError(f"{str(path)!r} is not an OBO file (first line {first.strip()[:60]!r}, expected 'format-version: ...')")
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("["):
                if term is not None:
                    rows.append(term)
                term = {"alt": [], "parents": []} if line == "[Term]" else None
                continue
            if term is None or ": " not in line:
                continue
            key, val = line.split(": ", 1)
            if key == "id":
                term["go_id"] = val
            elif key == "name":
                term["name"] = val
            elif key == "namespace":
                term["aspect"] = ASPECTS.get(val, val)
            elif key == "def":
                term["definition"] = val.split('"')[1] if val.startswith('"') else val
            elif key == "alt_id":
                term["alt"].append(val)
            elif key == "is_a":
                term["parents"].append(val.split(" ! ")[0].strip())
            elif key == "relationship" and val.startswith("part_of "):
                term["parents"].append(val[len("part_of "):].split(" ! ")[0].strip())
            elif key == "is_obsolete":
                term["obsolete"] = val.strip() == "true"
        if term is not None:
            rows.append(term)
    rows = [r for r in rows if "go_id" in r]
    if not rows:
        raise ValueError(f"OBO file {str(path)!r} has no [Term] stanzas")
    out = []
    for r in rows:
        base = {
            "go_id": r["go_id"], "name": r.get("name", ""), "aspect": r.get("aspect", ""),
            "definition": r.get("definition", ""), "parents": r["parents"],
            "obsolete": bool(r.get("obsolete", False)), "primary": r["go_id"],
        }
        out.append(base)
        for a in r["alt"]:
            out.append({**base, "go_id": a})
    return pd.DataFrame(out).drop_duplicates("go_id").reset_index(drop=True)


def read_summaries(path: str | os.PathLike) -> dict[str, str]:
    """GenePT-style ``{symbol: free text}`` JSON."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"gene summaries file {str(p)!r} not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"gene summaries file {str(p)!r} is not JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"gene summaries file {str(p)!r} must be a JSON object {{symbol: text}}")
    return data
