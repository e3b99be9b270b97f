"""Gene knowledge base: symbols and aliases, names, locations, GO terms, a text per gene.

Built once from NCBI ``gene_info`` + ``gene2go`` + GO ``go-basic.obo`` (+ optional
GenePT-style ``{symbol: summary}`` JSON) and cached as three parquet tables plus a JSON
manifest. Verifiers use it to resolve the symbols that appear in questions and model
outputs (PerturbQA sometimes uses an older symbol that NCBI now lists as an alias), to
look up a gene's GO annotations by aspect, and to get the text that GenePT embeds.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from softverify.infra.fsutil import atomic_dir
from softverify.bio import gene_sources as src
from softverify.configbase import cache_dir

KB_VERSION = 1
TYPE_RANK = {"protein-coding": 0, "ncRNA": 1}


@dataclass(frozen=True)
class GOTerm:
    go_id: str
    name: str
    aspect: str  # "BP" | "MF" | "CC"
    definition: str
    evidence: str = ""


@dataclass(frozen=True)
class GeneRecord:
    gene_id: int
    symbol: str
    full_name: str
    type: str
    chromosome: str
    map_location: str
    synonyms: tuple[str, ...]
    ensembl: str | None
    summary: str | None


def default_kb_dir() -> Path:
    return cache_dir() / "genes"


class GeneKB:
    """Lookups over the three tables; construct with :meth:`build` or :meth:`load`."""

    def __init__(self, genes: pd.DataFrame, terms: pd.DataFrame, annotations: pd.DataFrame):
        self.genes = genes.reset_index(drop=True)
        self.terms = terms.reset_index(drop=True)
        self.annotations = annotations.reset_index(drop=True)
        self._index()

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        gene_info: str | os.PathLike,
        gene2go: str | os.PathLike,
        obo: str | os.PathLike,
        summaries: str | os.PathLike | None = None,
        tax_id: str = "9606",
    ) -> "GeneKB":
        genes = src.read_gene_info(gene_info, tax_id)
        ann = src.read_gene2go(gene2go, tax_id)
        obo_df = src.read_obo(obo)
        # Map merged (alt) ids to their primary term, then keep primary terms only.
        primary = dict(zip(obo_df["go_id"], obo_df["primary"]))
        unknown = ~ann["go_id"].isin(primary)
        if unknown.mean() > 0.5:
            raise ValueError(
                f"{unknown.mean():.0%} of gene2go GO ids are not in {str(obo)!r}: is it a GO OBO file?"
            )
        ann = ann[~unknown].assign(go_id=lambda d: d["go_id"].map(primary))
        ann = ann.drop_duplicates(["gene_id", "go_id"]).reset_index(drop=True)
        terms = obo_df[obo_df["go_id"] == obo_df["primary"]].drop(columns=["primary"])
        summ = src.read_summaries(summaries) if summaries else {}
        kb = cls(genes.assign(summary=None), terms, ann)
        if summ:
            col = [None] * len(kb.genes)
            for sym, text in summ.items():
                row = kb._row(sym)
                if row is not None:
                    col[row] = text
            kb.genes["summary"] = col
        return kb

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write atomically: a temp dir beside ``out_dir`` then ``os.replace``."""
        out = Path(out_dir)
        with atomic_dir(out) as tmp:
            self.genes.to_parquet(tmp / "genes.parquet", index=False)
            self.terms.to_parquet(tmp / "go_terms.parquet", index=False)
            self.annotations.to_parquet(tmp / "annotations.parquet", index=False)
            (tmp / "manifest.json").write_text(json.dumps({
                "version": KB_VERSION, "genes": len(self.genes), "go_terms": len(self.terms),
                "annotations": len(self.annotations),
                "with_summary": int(self.genes["summary"].notna().sum()),
            }, indent=2))
        return out

    @classmethod
    def load(cls, kb_dir: str | os.PathLike | None = None) -> "GeneKB":
        d = Path(kb_dir) if kb_dir else default_kb_dir()
        man = d / "manifest.json"
        if not man.is_file():
            raise FileNotFoundError(
                f"no gene knowledge base in {str(d)!r} (build it with `softverify genes build "
                "--gene-info ... --gene2go ... --obo ...`)"
            )
        version = json.loads(man.read_text()).get("version")
        if version != KB_VERSION:
            raise ValueError(f"gene knowledge base {str(d)!r} has version {version}; expected {KB_VERSION} (rebuild it)")
        return cls(
            pd.read_parquet(d / "genes.parquet"),
            pd.read_parquet(d / "go_terms.parquet"),
            pd.read_parquet(d / "annotations.parquet"),
        )

    # ------------------------------------------------------------------ indexing
    def _index(self) -> None:
        g = self.genes
        self._by_symbol: dict[str, int] = {}
        self._by_upper: dict[str, int] = {}
        for i, s in enumerate(g["symbol"]):
            self._by_symbol.setdefault(s, i)
            self._by_upper.setdefault(s.upper(), i)
        # Aliases: an alias shared by several genes goes to the protein-coding one with
        # the lowest GeneID (the usual meaning in screens); official symbols always win.
        cands: dict[str, list[tuple[int, int, int]]] = {}
        for i, (syns, typ, gid) in enumerate(zip(g["synonyms"], g["type"], g["gene_id"])):
            for a in syns:
                cands.setdefault(a.upper(), []).append((TYPE_RANK.get(typ, 2), int(gid), i))
        for i, eid in enumerate(g["ensembl"]):
            if isinstance(eid, str) and eid:
                cands.setdefault(eid.upper(), []).append((-1, 0, i))
        self._by_alias = {a: min(c)[2] for a, c in cands.items()}
        self._term = {r.go_id: r for r in self.terms.itertuples(index=False)}
        self._ann: dict[int, list[tuple[str, str]]] = {}
        for gid, go, ev in zip(self.annotations["gene_id"], self.annotations["go_id"], self.annotations["evidence"]):
            self._ann.setdefault(int(gid), []).append((go, ev))

    def _row(self, symbol: str) -> int | None:
        s = str(symbol).strip()
        if s in self._by_symbol:
            return self._by_symbol[s]
        u = s.upper()
        if u in self._by_upper:
            return self._by_upper[u]
        if u in self._by_alias:
            return self._by_alias[u]
        if u.startswith("MT-"):
            # HGNC mitochondrial names (MT-ND5) vs NCBI's ND5 with alias MTND5.
            return self._by_alias.get(u.replace("-", ""), self._by_upper.get(u[3:]))
        base = u.split(".")[0]  # versioned Ensembl ids
        return self._by_alias.get(base)

    # ------------------------------------------------------------------ lookups
    def resolve(self, symbol: str) -> str | None:
        """Official NCBI symbol for a symbol, alias or Ensembl gene id; None if unknown."""
        row = self._row(symbol)
        return None if row is None else str(self.genes.at[row, "symbol"])

    def gene(self, symbol: str) -> GeneRecord | None:
        row = self._row(symbol)
        if row is None:
            return None
        r = self.genes.iloc[row]
        summary = r["summary"] if isinstance(r["summary"], str) else None
        return GeneRecord(
            gene_id=int(r["gene_id"]), symbol=str(r["symbol"]), full_name=str(r["full_name"]),
            type=str(r["type"]), chromosome=str(r["chromosome"]), map_location=str(r["map_location"]),
            synonyms=tuple(r["synonyms"]), ensembl=r["ensembl"] if isinstance(r["ensembl"], str) else None,
            summary=summary,
        )

    def go_terms(self, symbol: str, aspect: str | None = None) -> list[GOTerm]:
        """GO annotations of a gene (optionally one aspect: BP, MF or CC), sorted by aspect then name."""
        if aspect is not None and aspect not in src.ASPECT_NAMES:
            raise ValueError(f"unknown GO aspect {aspect!r}; expected one of {list(src.ASPECT_NAMES)}")
        rec = self.gene(symbol)
        if rec is None:
            return []
        out = []
        for go, ev in self._ann.get(rec.gene_id, []):
            t = self._term.get(go)
            if t is None or (aspect is not None and t.aspect != aspect):
                continue
            out.append(GOTerm(go_id=go, name=t.name, aspect=t.aspect, definition=t.definition, evidence=ev))
        return sorted(out, key=lambda t: ("BP MF CC".index(t.aspect), t.name))

    def term(self, go_id: str) -> GOTerm | None:
        t = self._term.get(go_id)
        return None if t is None else GOTerm(t.go_id, t.name, t.aspect, t.definition)

    def symbols(self) -> list[str]:
        return [str(s) for s in self.genes["symbol"]]

    def describe(self, symbol: str, max_terms_per_aspect: int = 25) -> str | None:
        """One paragraph per gene for GenePT-style embedding: identity, summary, GO terms.

        The free-text summary (when given) comes first, as in GenePT; GO term names follow
        so genes without a summary still get a functional description.
        """
        rec = self.gene(symbol)
        if rec is None:
            return None
        parts = [f"Gene {rec.symbol}: {rec.full_name}.", f"Type: {rec.type}."]
        if rec.map_location or rec.chromosome:
            parts.append(f"Location: chromosome {rec.chromosome}, {rec.map_location}.")
        if rec.synonyms:
            parts.append("Also known as " + ", ".join(rec.synonyms[:8]) + ".")
        if rec.summary:
            parts.append(rec.summary.strip())
        terms = self.go_terms(rec.symbol)
        for asp in ("BP", "MF", "CC"):
            names = [t.name for t in terms if t.aspect == asp][:max_terms_per_aspect]
            if names:
                parts.append(f"{src.ASPECT_NAMES[asp].capitalize()}: " + "; ".join(names) + ".")
        return " ".join(parts)

    def coverage(self, symbols: list[str]) -> dict[str, float | int]:
        """How many of ``symbols`` resolve, resolve via an alias, and have GO terms."""
        uniq = sorted(set(symbols))
        resolved = [s for s in uniq if self._row(s) is not None]
        via_alias = [s for s in resolved if s not in self._by_symbol and s.upper() not in self._by_upper]
        with_go = [s for s in resolved if self._ann.get(int(self.genes.at[self._row(s), "gene_id"]))]
        with_summary = [s for s in resolved if isinstance(self.genes.at[self._row(s), "summary"], str)]
        n = max(len(uniq), 1)
        return {
            "genes": len(uniq), "resolved": len(resolved), "resolved_via_alias": len(via_alias),
            "with_go": len(with_go), "with_summary": len(with_summary),
            "frac_resolved": len(resolved) / n, "frac_with_go": len(with_go) / n,
            "frac_with_summary": len(with_summary) / n,
        }
