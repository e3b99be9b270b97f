"""A gradient-boosted world model over what the training cell lines know, calibrated.

The pair MLP (:mod:`softverify.bio.worldmodel`) sees only gene embeddings, and loses to a
one-line baseline: the target gene's DE rate in the training lines. This model gives a
LightGBM classifier that rate itself, the perturbation's strength, their counts
(:mod:`softverify.bio.gene_stats`) and, optionally, both genes' embeddings; missing
features (a gene never seen, no embedding) are handled by the trees, so it never abstains.

With ``features='cross_line'`` it is the ranking teacher: the rows of each training line are
described by the *other* training lines (:mod:`softverify.bio.line_profile`: the rates, the
pair's own label there, and whether A's knockdown there moves genes like B), exactly what a
held-out cell line gives it; it stops early on PerturbQA's per-gene AUROC and predicts the
mean over its training lines' views.

Its probabilities are calibrated with isotonic regression on a validation split held out
*by perturbation* (the way test sets are built): a soft verifier's p is its reward.

Why LightGBM and not scikit-learn's HistGradientBoosting: a model must be saved without
pickle, and LightGBM has a documented text model format (``model.txt``). The directory
holds ``model.txt`` + ``worldmodel.json`` (gene statistics, calibration curve, threshold,
metrics) + ``embedding.safetensors`` when embeddings are used; all written atomically.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from softverify.bio.embeddings import GeneEmbedding
from softverify.bio.gene_stats import FEATURES, GeneStats, out_of_fold_features
from softverify.bio.line_profile import PROFILE_FEATURES, LineProfile
from softverify.bio.metrics import best_mcc_threshold, binary_metrics
from softverify.bio.questions import validation_perts_mask
from softverify.infra.fsutil import atomic_dir

FORMAT_VERSION = 1
KIND = "gbdt"


@dataclass
class GBDTConfig:
    num_leaves: int = 31
    learning_rate: float = 0.05
    max_rounds: int = 600
    early_stopping: int = 40
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    folds: int = 5  # out-of-fold gene statistics for the training rows
    pseudo: float = 20.0  # pseudo-count shrinking rates towards the base rate
    val_fraction: float = 0.15
    seed: int = 0
    threads: int = 2
    max_rows: int | None = None
    # 'pooled': gene statistics over every training row, out of fold by perturbation (+ the genes'
    # embeddings); 'cross_line': each training line's rows get features from the *other* lines'
    # profiles (softverify.bio.line_profile: rates, the pair's own label there, neighbourhood scores
    # through the embedding), as a held-out line will; needs two or more lines and an embedding
    features: str = "pooled"
    # cross_line only, for ablations: the PROFILE_FEATURES columns used (None: all), and the
    # objective: 'binary' (pointwise, calibrated p) or 'lambdarank' (one query per (line, target gene))
    feature_subset: tuple[str, ...] | None = None
    objective: str = "binary"


FEATURE_SETS = ("pooled", "cross_line")


class GBDTWorldModel:
    def __init__(self, booster, stats: GeneStats, embedding: GeneEmbedding | None, calib: tuple[list, list],
                 meta: dict, profiles: list[LineProfile] | None = None):
        self.booster, self.stats, self.embedding, self.calib, self.meta = booster, stats, embedding, calib, meta
        self.profiles = profiles or []  # cross_line: one per training line

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    # ----------------------------------------------------------------- features
    @staticmethod
    def _emb(embedding: GeneEmbedding | None, symbols) -> np.ndarray:
        if embedding is None or embedding.vectors is None:
            return np.zeros((len(symbols), 0))
        return embedding.matrix(list(symbols)).astype(np.float64)  # NaN rows where absent: trees route them

    def _design(self, stat_feats: np.ndarray, perts, genes) -> np.ndarray:
        return np.column_stack([stat_feats, self._emb(self.embedding, perts), self._emb(self.embedding, genes)])

    # ----------------------------------------------------------------- training
    @classmethod
    def fit(cls, train: pd.DataFrame, embedding: GeneEmbedding | None = None, cfg: GBDTConfig | None = None,
            cell_lines: list[str] | None = None, log=print) -> "GBDTWorldModel":
        cfg = cfg or GBDTConfig()
        if cfg.features not in FEATURE_SETS:
            raise ValueError(f"gbdt features={cfg.features!r}; expected one of {list(FEATURE_SETS)}")
        if cfg.features == "cross_line":
            return cls._fit_cross_line(train, embedding, cfg, log)
        import lightgbm as lgb
        from sklearn.isotonic import IsotonicRegression

        df = train[["pert", "gene", "label"]].reset_index(drop=True)
        if cfg.max_rows is not None and len(df) > cfg.max_rows:
            df = df.sample(cfg.max_rows, random_state=cfg.seed).reset_index(drop=True)
        val = validation_perts_mask(df["pert"].to_numpy(), cfg.val_fraction, cfg.seed)
        y = df["label"].to_numpy().astype(int)
        if val.all() or not val.any() or len(np.unique(y[val])) < 2:
            raise ValueError("validation split by perturbation is degenerate; use more rows or another val_fraction")
        tr, va = df.loc[~val].reset_index(drop=True), df.loc[val].reset_index(drop=True)
        self = cls(None, GeneStats.fit(tr, cfg.pseudo), embedding, ([0.0, 1.0], [0.0, 1.0]), {})
        x_tr = self._design(out_of_fold_features(tr, cfg.folds, cfg.seed, cfg.pseudo), tr["pert"], tr["gene"])
        x_va = self._design(self.stats.features(va["pert"], va["gene"]), va["pert"], va["gene"])
        params = {"objective": "binary", "metric": "auc", "num_leaves": cfg.num_leaves,
                  "learning_rate": cfg.learning_rate, "min_data_in_leaf": cfg.min_data_in_leaf,
                  "feature_fraction": cfg.feature_fraction, "seed": cfg.seed, "num_threads": cfg.threads,
                  "verbose": -1, "deterministic": True}
        booster = lgb.train(params, lgb.Dataset(x_tr, y[~val]), cfg.max_rounds,
                            valid_sets=[lgb.Dataset(x_va, y[val])],
                            callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)])
        raw = booster.predict(x_va, num_iteration=booster.best_iteration)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y[val])
        self.booster = booster
        self.calib = ([float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_])
        pv = self._calibrate(raw)
        thr = best_mcc_threshold(pv, y[val])
        log(f"gbdt: {booster.best_iteration} rounds, val AUROC {binary_metrics(pv, y[val], thr)['auroc']:.4f}")
        self.stats = GeneStats.fit(df, cfg.pseudo)  # inference uses every training row
        self.meta = {"format": FORMAT_VERSION, "model_kind": KIND,
                     "embedding_kind": None if embedding is None else embedding.kind,
                     "cell_lines": list(cell_lines or []), "threshold": thr, "best_iteration": booster.best_iteration,
                     "val": binary_metrics(pv, y[val], thr), "val_uncalibrated": binary_metrics(raw, y[val], thr),
                     "train_rows": int((~val).sum()), "val_rows": int(val.sum()), "features": list(FEATURES),
                     "fit_config": asdict(cfg)}
        return self

    @classmethod
    def _fit_cross_line(cls, train: pd.DataFrame, embedding: GeneEmbedding | None, cfg: GBDTConfig,
                        log) -> "GBDTWorldModel":
        """Rows of line L with features from line L' != L, for every ordered pair of training
        lines; early stopping on PerturbQA's per-gene AUROC of held-out perturbations (the
        metric this model is for), then isotonic calibration of the same rows' scores."""
        import lightgbm as lgb
        from sklearn.isotonic import IsotonicRegression

        from softverify.metrics.ranking import auc_per_gene

        if embedding is None or embedding.vectors is None:
            raise ValueError("gbdt features='cross_line' needs a gene embedding with vectors (--embedding: a "
                             "`softverify embed genes` directory, e.g. --kind go)")
        if "cell_line" not in train.columns or train["cell_line"].nunique() < 2:
            lines = sorted(train["cell_line"].unique()) if "cell_line" in train.columns else []
            raise ValueError(f"gbdt features='cross_line' needs rows of two or more cell lines; got {lines}")
        cols = list(cfg.feature_subset or PROFILE_FEATURES)
        bad = [c for c in cols if c not in PROFILE_FEATURES]
        if bad or not cols:
            raise ValueError(f"gbdt feature_subset {cols}: expected a non-empty subset of {list(PROFILE_FEATURES)}")
        if cfg.objective not in ("binary", "lambdarank"):
            raise ValueError(f"gbdt objective={cfg.objective!r}; expected 'binary' or 'lambdarank'")
        df = train[["pert", "gene", "label", "cell_line"]].reset_index(drop=True)
        if cfg.max_rows is not None and len(df) > cfg.max_rows:
            df = df.sample(cfg.max_rows, random_state=cfg.seed).reset_index(drop=True)
        lines = sorted(df["cell_line"].unique())
        profiles = {c: LineProfile.fit(df[df["cell_line"] == c], embedding, c, cfg.pseudo) for c in lines}
        parts = []
        for c in lines:
            rows = df[df["cell_line"] == c]
            for other in lines:
                if other != c:
                    x = profiles[other].features(rows["pert"], rows["gene"], embedding)
                    parts.append((x, rows["label"].to_numpy().astype(int), (c + ":" + rows["gene"]).to_numpy(),
                                  rows["pert"].to_numpy()))
        x, y, grp, pert = (np.concatenate([p[i] for p in parts]) for i in range(4))
        x = x[:, [PROFILE_FEATURES.index(c) for c in cols]]
        val = validation_perts_mask(pert, cfg.val_fraction, cfg.seed)
        if val.all() or not val.any() or len(np.unique(y[val])) < 2:
            raise ValueError("validation split by perturbation is degenerate; use more rows or another val_fraction")
        order = np.argsort(grp, kind="stable")  # lambdarank's queries must be contiguous; binary does not care
        x, y, grp, val = x[order], y[order], grp[order], val[order]

        def dataset(m):
            return lgb.Dataset(x[m], y[m], group=(np.unique(grp[m], return_counts=True)[1]
                                                  if cfg.objective == "lambdarank" else None))

        def per_gene(pred, _ds):
            return "auc_per_gene", auc_per_gene(grp[val], y[val], pred).auc_per_gene, True

        params = {"objective": cfg.objective, "metric": "None", "num_leaves": cfg.num_leaves,
                  "learning_rate": cfg.learning_rate, "min_data_in_leaf": cfg.min_data_in_leaf,
                  "feature_fraction": cfg.feature_fraction, "seed": cfg.seed, "num_threads": cfg.threads,
                  "verbose": -1, "deterministic": True}
        booster = lgb.train(params, dataset(~val), cfg.max_rounds, valid_sets=[dataset(val)], feval=per_gene,
                            callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)])
        raw = booster.predict(x[val], num_iteration=booster.best_iteration)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y[val])
        self = cls(booster, profiles[lines[0]].stats, embedding,
                   ([float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_]), {},
                   [profiles[c] for c in lines])
        pv = self._calibrate(raw)
        thr = best_mcc_threshold(pv, y[val])
        pg = auc_per_gene(grp[val], y[val], pv)
        log(f"gbdt cross_line ({', '.join(lines)}): {booster.best_iteration} rounds, held-out perturbations' "
            f"auc_per_gene {pg.auc_per_gene:.4f} over {pg.genes} (line, gene) groups")
        self.meta = {"format": FORMAT_VERSION, "model_kind": KIND, "features_kind": "cross_line",
                     "embedding_kind": embedding.kind, "cell_lines": lines, "threshold": thr,
                     "best_iteration": booster.best_iteration, "val": binary_metrics(pv, y[val], thr),
                     "val_auc_per_gene": pg.auc_per_gene, "train_rows": int((~val).sum()),
                     "val_rows": int(val.sum()), "features": cols, "fit_config": asdict(cfg)}
        return self

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.calib[0], self.calib[1])

    # ----------------------------------------------------------------- inference
    def predict_proba(self, perts, genes) -> np.ndarray:
        if len(perts) != len(genes):
            raise ValueError(f"{len(perts)} perts but {len(genes)} genes")
        if len(perts) == 0:
            return np.zeros(0)
        it = self.meta.get("best_iteration") or None
        if self.profiles:  # cross_line: each training line's view of the rows, calibrated, averaged
            cols = [PROFILE_FEATURES.index(c) for c in self.meta["features"]]
            return np.mean([self._calibrate(self.booster.predict(pr.features(perts, genes, self.embedding)[:, cols],
                                                                 num_iteration=it)) for pr in self.profiles], axis=0)
        x = self._design(self.stats.features(list(perts), list(genes)), list(perts), list(genes))
        return self._calibrate(self.booster.predict(x, num_iteration=it))

    def evaluate(self, df: pd.DataFrame) -> dict[str, float]:
        return binary_metrics(self.predict_proba(list(df["pert"]), list(df["gene"])), df["label"].to_numpy(),
                              self.threshold)

    # ----------------------------------------------------------------- storage
    def save(self, out_dir: str | os.PathLike) -> Path:
        out = Path(out_dir)
        with atomic_dir(out) as tmp:
            (tmp / "model.txt").write_text(self.booster.model_to_string())
            meta = {**self.meta, "gene_stats": self.stats.to_json(), "calibration": {"x": self.calib[0],
                                                                                     "y": self.calib[1]}}
            if self.embedding is not None and self.embedding.vectors is not None:
                from safetensors.numpy import save_file

                save_file({"table": np.ascontiguousarray(self.embedding.vectors, dtype=np.float32)},
                          str(tmp / "embedding.safetensors"))
                meta["symbols"] = list(self.embedding.symbols)
                meta["embedding_meta"] = self.embedding.meta
            for pr in self.profiles:
                pr.save(tmp / "profiles" / pr.cell_line)
            (tmp / "worldmodel.json").write_text(json.dumps(meta, default=float))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GBDTWorldModel":
        import lightgbm as lgb

        d = Path(path)
        meta = json.loads((d / "worldmodel.json").read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("model_kind") != KIND:
            raise ValueError(f"{str(d)!r} is not a format-{FORMAT_VERSION} gbdt world model")
        booster = lgb.Booster(model_str=(d / "model.txt").read_text())
        stats = GeneStats.from_json(meta.pop("gene_stats"))
        cal = meta.pop("calibration")
        emb = None
        if (d / "embedding.safetensors").is_file():
            from safetensors.numpy import load_file

            emb = GeneEmbedding(meta["embedding_kind"], meta.pop("symbols"), load_file(str(d / "embedding.safetensors"))
                                ["table"], meta.pop("embedding_meta", {}))
        profiles = [LineProfile.load(d / "profiles" / c) for c in meta["cell_lines"]] \
            if meta.get("features_kind") == "cross_line" else None
        return cls(booster, stats, emb, (cal["x"], cal["y"]), meta, profiles)
