"""Soft verifiers: a world model of perturbation effects and a co-expression matrix.

Both produce p = P(the true answer is "yes") and reward p for a yes, 1 - p for a no.
The normalisation threshold belongs to p, not to the reward: "no" on a pair with p just
below t is a good answer, and normalising 1 - p with t would say otherwise. So these
verifiers own their threshold (``owns_threshold``): ``VerifierSpec.threshold``, when set,
is handed to them and applied to p, and reward composition does not apply it again.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from softverify.rewards import threshold_normalize
from softverify.types import Sample
from softverify.verifiers.base import Verifier, register
from softverify.verifiers.textparts import answers_as_int, metadata_column, reward_from_p_yes, task_mask


def _negated(samples: Sequence[Sample]) -> np.ndarray:
    return np.array([bool(s.metadata.get("negated", False)) for s in samples], dtype=bool)


@register("world_model")
class WorldModelVerifier(Verifier):
    """rbio1's soft verifier: a trained pair MLP (``softverify worldmodel fit``) gives
    p = P(DE | pert, gene); with threshold normalisation (default: the model's own
    validation-MCC threshold) then p for yes, 1 - p for no (flipped for negated questions).

    Batched: the distinct (pert, gene) pairs of a batch (a GRPO group shares one) go
    through one forward pass; symbol -> embedding-row lookups are cached. Abstains for genes without an
    embedding and for tasks other than ``tasks`` (default: the knockdown task ``de``).
    ``shuffle_seed``: the shuffled-reward control (genes answer with a permuted gene's p).
    ``p_table``: read p from a teacher table (``softverify worldmodel table``: a world model
    scored offline over a question pool, optionally centred per target gene or permuted)
    instead of ``model_dir``; pairs the table lacks abstain.
    """

    owns_threshold = True

    def __init__(self, name: str | None = None, model_dir: str | None = None, threshold: float | str | None = "model",
                 tasks: Sequence[str] | None = ("de",), shuffle_seed: int | None = None, p_table: str | None = None):
        super().__init__(name)
        if model_dir and p_table:
            raise ValueError(f"world_model verifier: give params.model_dir ({model_dir!r}) or params.p_table "
                             f"({p_table!r}), not both")
        if p_table and shuffle_seed is not None:
            raise ValueError("world_model verifier: shuffle_seed permutes a model's gene embeddings; with p_table "
                             "make a permuted table instead (`softverify worldmodel table --permute-seed N`)")
        from softverify.bio.teacher_table import load_teacher

        self.model = load_teacher({"model_dir": model_dir, "p_table": p_table})
        self.set_threshold(self.model.threshold if threshold == "model" else threshold)
        self.tasks = None if tasks is None else list(tasks)
        self._row_cache: dict[str, int] = {}  # symbol -> embedding row (-1 = no embedding)
        # Control for the science ladder: each gene symbol answers with another gene's
        # embedding row (a fixed random permutation), so every question keeps a consistent
        # reward from the same distribution of p, but one unrelated to its own genes.
        self._perm = None
        self._shuffle_map: dict[str, str] | None = None
        self.mlp = hasattr(self.model, "net")  # pair MLP: fast row-index path; else predict_proba
        if shuffle_seed is not None:
            rng = np.random.default_rng(int(shuffle_seed))
            if self.mlp:
                self._perm = rng.permutation(len(self.model.embedding.symbols))
            else:
                vocab = sorted(set(self.model.stats.target) | set(self.model.stats.pert))
                self._shuffle_map = dict(zip(vocab, (vocab[i] for i in rng.permutation(len(vocab)))))

    def set_threshold(self, threshold: float | str | None) -> None:
        """The threshold p is normalised at. Also called after the verifier is built, when a
        threshold policy was resolved over the training prompts with this verifier's own
        model (:func:`softverify.verifiers.balance.resolve_threshold_policies`): the model
        is then loaded once for both, and the verifier scores as one built with that number."""
        if threshold in ("balanced", "median"):
            raise ValueError(f"world_model threshold {threshold!r} is a policy over training prompts: the trainer "
                             "resolves it (softverify.verifiers.balance); here pass a number or 'model'")
        if threshold is not None and not 0 <= float(threshold) <= 1:
            raise ValueError(f"world_model threshold must be in [0, 1] or 'model', got {threshold!r}")
        self.threshold = None if threshold is None else float(threshold)

    def p_de(self, perts: list, genes: list) -> np.ndarray:
        """P(DE) per pair, NaN for unknown genes: symbols -> rows once per distinct symbol,
        then one forward pass over the distinct known pairs."""
        from softverify.bio.worldmodel import _predict_idx  # the model's own batched forward

        if not self.mlp:
            return self._p_de_generic(perts, genes)
        pi, gi = self._rows(perts), self._rows(genes)
        ok = (pi >= 0) & (gi >= 0)
        out = np.full(len(pi), np.nan)
        if ok.any():
            n = len(self.model.embedding.symbols)
            keys, inv = np.unique(pi[ok] * n + gi[ok], return_inverse=True)
            out[ok] = _predict_idx(self.model.net, keys // n, keys % n)[inv]
        return out

    def _p_de_generic(self, perts: list, genes: list) -> np.ndarray:
        """Any model with ``predict_proba``: one call over the distinct pairs of the batch."""
        if self._shuffle_map is not None:
            m = self._shuffle_map
            perts, genes = [m.get(p, p) for p in perts], [m.get(g, g) for g in genes]
        pairs = list(zip(perts, genes))
        uniq = list(dict.fromkeys(pairs))
        p = self.model.predict_proba([a for a, _ in uniq], [b for _, b in uniq])
        look = dict(zip(uniq, p))
        return np.array([look[x] for x in pairs], dtype=np.float64)

    def _rows(self, symbols: list) -> np.ndarray:
        get = self._row_cache.get
        idx = [get(s) for s in symbols]
        if any(i is None for i in idx):
            miss = sorted({str(s) for s, i in zip(symbols, idx) if i is None})
            rows = self.model.embedding.index(miss)
            if self._perm is not None:
                rows = np.where(rows >= 0, self._perm[np.maximum(rows, 0)], -1)
            self._row_cache.update(zip(miss, rows.tolist()))
            idx = [self._row_cache[str(s)] if i is None else i for s, i in zip(symbols, idx)]
        return np.asarray(idx, dtype=np.int64)

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        p = self.p_de(metadata_column(samples, "pert"), metadata_column(samples, "gene"))
        p = threshold_normalize(p, self.threshold)
        p_yes = np.where(_negated(samples), 1.0 - p, p)
        r = reward_from_p_yes(p_yes, answers_as_int(samples))
        return np.where(task_mask(samples, self.tasks), r, np.nan)


@register("coexpression")
class CoexpressionVerifier(Verifier):
    """Gene-pair co-expression from a score matrix (``.npz``/``.parquet``, see
    :mod:`softverify.bio.coexpression`): pairs in the top ``top_fraction`` of scores count
    as "yes", the bottom ``bottom_fraction`` (default = top) as "no", pairs in between and
    unknown genes abstain.

    ``mode='soft'``: p = threshold-normalised percentile of the pair (threshold default
    1 - top_fraction, so every top pair has p >= 0.5), reward p / 1 - p. ``mode='hard'``:
    1 if the answer matches the pair's class, else 0. Judges any task with a gene pair in
    ``pert``/``gene``: the co-expression questions, and the knockdown questions as a proxy
    (co-expressed genes are more often DE after a knockdown).
    """

    owns_threshold = True

    def __init__(self, name: str | None = None, matrix: str | None = None, top_fraction: float = 0.1,
                 bottom_fraction: float | None = None, mode: str = "soft", threshold: float | None = None,
                 tasks: Sequence[str] | None = None):
        super().__init__(name)
        if not matrix:
            raise ValueError("coexpression verifier needs params.matrix (.npz or .parquet gene x gene scores)")
        bottom = top_fraction if bottom_fraction is None else bottom_fraction
        if not (0 < top_fraction <= 0.5 and 0 < bottom <= 0.5):
            raise ValueError(f"coexpression top/bottom fractions must be in (0, 0.5]; got {top_fraction}, {bottom}")
        if mode not in ("soft", "hard"):
            raise ValueError(f"coexpression mode must be 'soft' or 'hard', got {mode!r}")
        from softverify.bio.coexpression import CoexpressionMatrix

        self.matrix = CoexpressionMatrix.load(matrix)
        self.top, self.bottom, self.mode = float(top_fraction), float(bottom), mode
        self.threshold = 1.0 - self.top if threshold is None else float(threshold)
        self.tasks = None if tasks is None else list(tasks)

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        q = self.matrix.pair_percentile(metadata_column(samples, "pert"), metadata_column(samples, "gene"))
        with np.errstate(invalid="ignore"):
            decided = (q >= 1.0 - self.top) | (q <= self.bottom)
        q = np.where(decided, q, np.nan)
        if self.mode == "hard":
            p = np.where(np.isnan(q), np.nan, (q >= 1.0 - self.top).astype(float))
        else:
            p = threshold_normalize(q, self.threshold)
        p_yes = np.where(_negated(samples), 1.0 - p, p)
        r = reward_from_p_yes(p_yes, answers_as_int(samples))
        return np.where(task_mask(samples, self.tasks), r, np.nan)
