"""The Gene Ontology side of the knowledge verifiers: a gene KB loaded once per process,
GO reference texts and keyword sets per gene.

Params accepted by every knowledge verifier: ``kb_dir`` (a cached ``softverify genes
build`` output: parquet tables + manifest), or ``gene_info`` + ``gene2go`` + ``obo``
(+ optional ``summaries``) to build it in memory. Either way only parquet/JSON/text is read.
"""
from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

ASPECTS = ("BP", "MF", "CC")
_STOP = frozenset(
    "a an and are as at be by for from in into is it of on or that the this to via with without which "
    "its their than then these those not no yes".split()
)


@lru_cache(maxsize=4)
def load_kb(kb_dir: str | None = None, gene_info: str | None = None, gene2go: str | None = None,
            obo: str | None = None, summaries: str | None = None):
    """One :class:`~softverify.bio.genes.GeneKB` per distinct source per process (an actor
    hosting several knowledge verifiers shares it)."""
    from softverify.bio.genes import GeneKB

    if gene_info or gene2go or obo:
        if not (gene_info and gene2go and obo):
            raise ValueError("knowledge verifiers need gene_info, gene2go and obo together (or kb_dir)")
        return GeneKB.build(gene_info, gene2go, obo, summaries)
    return GeneKB.load(kb_dir)


def kb_from_params(kb_dir=None, gene_info=None, gene2go=None, obo=None, summaries=None):
    s = lambda x: None if x is None else str(x)  # noqa: E731  (cache keys must be hashable)
    return load_kb(s(kb_dir), s(gene_info), s(gene2go), s(obo), s(summaries))


@lru_cache(maxsize=2)
def term_gene_counts(kb) -> dict[str, int]:
    """How many genes carry each GO term (direct annotations)."""
    return kb.annotations.groupby("go_id")["gene_id"].nunique().to_dict()


class GOReference:
    """Per-gene GO term names, memoised: at most ``max_terms``, round-robin over aspects.

    Well-studied genes have hundreds of terms (TP53: 184), so the choice matters. Within
    an aspect, terms shared by more genes come first ("apoptotic process" before "ER
    overload response"): that is the level at which reasoning states facts. Terms on more
    than ``max_gene_fraction`` of annotated genes ("protein binding", "cytoplasm",
    "regulation of transcription by RNA polymerase II") say little about a particular
    gene and are dropped (default 2%: TP53 keeps "positive regulation of apoptotic process",
    "cellular response to DNA damage stimulus", "regulation of cell cycle" ...).
    """

    def __init__(self, kb, aspects=ASPECTS, max_terms: int = 30, max_gene_fraction: float = 0.02):
        bad = [a for a in aspects if a not in ASPECTS]
        if bad:
            raise ValueError(f"unknown GO aspects {bad}; expected a subset of {list(ASPECTS)}")
        if max_terms <= 0:
            raise ValueError(f"max_terms must be > 0, got {max_terms}")
        self.kb, self.aspects, self.max_terms = kb, tuple(aspects), max_terms
        self._count = term_gene_counts(kb)
        self._cap = max_gene_fraction * kb.annotations["gene_id"].nunique()
        self._terms: dict[str, list[str]] = {}

    def _ranked(self, symbol: str) -> dict[str, list[str]]:
        ts = [t for t in self.kb.go_terms(symbol) if self._count.get(t.go_id, 0) <= self._cap]
        ts.sort(key=lambda t: (-self._count.get(t.go_id, 0), t.name))
        return {a: [t.name for t in ts if t.aspect == a] for a in self.aspects}

    def terms(self, symbol) -> list[str]:
        """Term names; [] for an unknown gene or one without annotations."""
        key = str(symbol)
        if key not in self._terms:
            by = self._ranked(key)
            out: list[str] = []
            i = 0
            while len(out) < self.max_terms and any(i < len(v) for v in by.values()):
                out += [by[a][i] for a in self.aspects if i < len(by[a])]
                i += 1
            self._terms[key] = out[: self.max_terms]
        return self._terms[key]

    def text(self, symbol) -> str:
        t = self.terms(symbol)
        return f"{symbol}: " + "; ".join(t) + "." if t else ""


@lru_cache(maxsize=2)
def generic_go_words(kb, max_doc_fraction: float = 0.01) -> frozenset[str]:
    """Words in more than ``max_doc_fraction`` of all GO term names ("regulation",
    "process", "activity", "positive" ...): they carry no gene-specific knowledge."""
    df: Counter[str] = Counter()
    names = list(kb.terms["name"])
    for n in names:
        df.update(set(re.findall(r"[a-z0-9]+", n.lower())))
    cut = max_doc_fraction * len(names)
    return frozenset(w for w, c in df.items() if c > cut) | _STOP
