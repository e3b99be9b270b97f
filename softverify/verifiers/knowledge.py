"""Knowledge verifiers: agreement of the model's stated gene facts with the Gene Ontology.

- ``go_rouge``: ROUGE-1/2/L between the reasoning (``<gene_info>`` > ``<think>``) and the
  GO annotations of the question's genes (rbio1's knowledge reward).
- ``go_keywords``: how many of a gene's specific GO keywords the reasoning uses.

ROUGE is rouge-score's definition exactly (its tokenizer and Porter stemmer, its n-gram
counting); two things make it fast enough for a training loop: stems are memoised (the
stemmer dominates otherwise), and ROUGE-L's longest common subsequence uses the
bit-parallel algorithm (Allison & Dix 1986; Hyyrö 2004) on the reference's per-token bit
masks, cached per gene, instead of an O(n*m) Python table. Tests check equality with
``rouge_scorer.RougeScorer`` on real examples.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
from rouge_score import tokenize as rouge_tokenize
from rouge_score.tokenizers import porter

from softverify.types import Sample
from softverify.verifiers.base import Verifier, register
from softverify.verifiers.gokb import ASPECTS, GOReference, generic_go_words, kb_from_params
from softverify.verifiers.textparts import reasoning_text

VARIANTS = ("rouge1", "rouge2", "rougeL")
MEASURES = ("precision", "recall", "fmeasure")


class CachedStemmer:
    """rouge-score's Porter stemmer with a memo (the same stems, ~50x fewer calls)."""

    def __init__(self):
        self._stemmer = porter.PorterStemmer()
        self._memo: dict[str, str] = {}

    def stem(self, word: str) -> str:
        s = self._memo.get(word)
        if s is None:
            s = self._memo[word] = self._stemmer.stem(word)
        return s


_STEMMER = CachedStemmer()


def tokens(text: str) -> list[str]:
    return rouge_tokenize.tokenize(text, _STEMMER)


def lcs_length(pred: list[str], ref_masks: dict[str, int], ref_len: int) -> int:
    """Length of the longest common subsequence, bit-parallel over the reference."""
    full = (1 << ref_len) - 1
    v = full
    for tok in pred:
        m = ref_masks.get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return ref_len - v.bit_count()


def _prf(hit: int, n_pred: int, n_ref: int) -> tuple[float, float, float]:
    p = hit / max(n_pred, 1)
    r = hit / max(n_ref, 1)
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0)


class Reference:
    """A tokenised reference text with what ROUGE needs precomputed."""

    __slots__ = ("toks", "ngrams", "masks")

    def __init__(self, text: str):
        self.toks = tokens(text)
        self.ngrams = {1: Counter(self.toks), 2: Counter(zip(self.toks, self.toks[1:]))}
        masks: dict[str, int] = {}
        for i, t in enumerate(self.toks):
            masks[t] = masks.get(t, 0) | (1 << i)
        self.masks = masks


def rouge(pred_toks: list[str], ref: Reference) -> dict[str, tuple[float, float, float]]:
    """``{variant: (precision, recall, fmeasure)}`` as rouge-score computes them."""
    out = {}
    for n, name in ((1, "rouge1"), (2, "rouge2")):
        pc = Counter(pred_toks) if n == 1 else Counter(zip(pred_toks, pred_toks[1:]))
        hit = sum(min(c, pc[g]) for g, c in ref.ngrams[n].items()) if len(pc) > len(ref.ngrams[n]) else \
            sum(min(c, ref.ngrams[n].get(g, 0)) for g, c in pc.items())
        out[name] = _prf(hit, sum(pc.values()), sum(ref.ngrams[n].values()))
    if not pred_toks or not ref.toks:
        out["rougeL"] = (0.0, 0.0, 0.0)
    else:
        out["rougeL"] = _prf(lcs_length(pred_toks, ref.masks, len(ref.toks)), len(pred_toks), len(ref.toks))
    return out


class _GOVerifier(Verifier):
    """Shared params: KB source, which metadata genes (``keys``), GO ``aspects``, and the
    reference's ``max_terms`` / ``max_gene_fraction`` (see :class:`GOReference`)."""

    def __init__(self, name=None, kb_dir=None, gene_info=None, gene2go=None, obo=None, summaries=None,
                 keys: Sequence[str] = ("pert", "gene"), aspects: Sequence[str] = ASPECTS, max_terms: int = 30,
                 max_gene_fraction: float = 0.02):
        super().__init__(name)
        self.kb = kb_from_params(kb_dir, gene_info, gene2go, obo, summaries)
        self.go = GOReference(self.kb, tuple(aspects), max_terms, max_gene_fraction)
        self.keys = list(keys)
        if not self.keys:
            raise ValueError(f"{self.kind} verifier needs at least one metadata key in params.keys")

    def genes_of(self, s: Sample) -> list[str]:
        return [str(s.metadata[k]) for k in self.keys if s.metadata.get(k)]


@register("go_rouge")
class GORougeVerifier(_GOVerifier):
    """ROUGE between the reasoning and the GO annotations of the question's genes.

    ``variant``: rouge1 | rouge2 | rougeL | mean (of the three); ``measure``: precision
    (share of the stated words that GO supports), recall (share of GO covered) or
    fmeasure. Reasoning with no words scores 0; abstains when no gene has GO terms.
    """

    def __init__(self, name=None, variant: str = "mean", measure: str = "fmeasure", **kw):
        super().__init__(name, **kw)
        if variant not in VARIANTS + ("mean",):
            raise ValueError(f"go_rouge variant must be one of {list(VARIANTS) + ['mean']}, got {variant!r}")
        if measure not in MEASURES:
            raise ValueError(f"go_rouge measure must be one of {list(MEASURES)}, got {measure!r}")
        self.variant, self.m = variant, MEASURES.index(measure)
        self._refs: dict[tuple[str, ...], Reference | None] = {}

    def reference(self, genes: list[str]) -> Reference | None:
        key = tuple(genes)
        if key not in self._refs:
            text = " ".join(t for t in (self.go.text(g) for g in genes) if t)
            self._refs[key] = Reference(text) if text else None
        return self._refs[key]

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        out = np.full(len(samples), np.nan)
        for i, s in enumerate(samples):
            ref = self.reference(self.genes_of(s))
            if ref is None:
                continue
            r = rouge(tokens(reasoning_text(s.completion)), ref)
            names = VARIANTS if self.variant == "mean" else (self.variant,)
            out[i] = sum(r[v][self.m] for v in names) / len(names)
        return out


@register("go_keywords")
class GOKeywordVerifier(_GOVerifier):
    """Keyword hit rate: distinct gene-specific GO words (stemmed; words common to >1% of
    all GO term names dropped) used in the reasoning, divided by ``min(target, available)``
    and capped at 1 -- naming ``target`` of a gene's keywords earns the full reward."""

    def __init__(self, name=None, target: int = 5, **kw):
        kw.setdefault("max_terms", 200)  # keywords come from (nearly) all of a gene's terms
        super().__init__(name, **kw)
        if target <= 0:
            raise ValueError(f"go_keywords target must be > 0, got {target}")
        self.target = target
        self.generic = frozenset(_STEMMER.stem(w) if len(w) > 3 else w for w in generic_go_words(self.kb))
        self._kw: dict[tuple[str, ...], frozenset[str]] = {}

    def keywords(self, genes: list[str]) -> frozenset[str]:
        key = tuple(genes)
        if key not in self._kw:
            words = {t for g in genes for term in self.go.terms(g) for t in tokens(term)}
            self._kw[key] = frozenset(w for w in words if w not in self.generic and len(w) > 2 and not w.isdigit())
        return self._kw[key]

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        out = np.full(len(samples), np.nan)
        for i, s in enumerate(samples):
            kw = self.keywords(self.genes_of(s))
            if kw:
                hit = len(kw.intersection(tokens(reasoning_text(s.completion))))
                out[i] = min(1.0, hit / min(self.target, len(kw)))
        return out
