"""World models: an MLP that predicts DE from (perturbed gene, target gene) embeddings.

The soft verifier's brain (rbio1): trained with BCE on some cell lines, it answers
"would knocking down A change B?" with a probability. Inputs are the concatenated
embeddings of the two genes (one-hot, GenePT text or GO factorisation, see
:mod:`softverify.bio.embeddings`). Early stopping watches validation AUROC on a
validation set held out *by perturbation*, the way test sets are built, so the chosen
epoch is the one that generalises to new knockdowns. The decision threshold stored with
the model maximises validation MCC; the verifier can use it as its normalisation ``t``.

A saved model is a directory: ``model.safetensors`` (weights and the frozen embedding
table) + ``worldmodel.json`` (symbols, embedding kind, cell lines, threshold, metrics),
written to a temp dir and renamed into place.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from softverify.infra.fsutil import atomic_dir
from softverify.bio.embeddings import GeneEmbedding
from softverify.bio.worldmodel_files import require_world_model_dir
from softverify.bio.metrics import best_mcc_threshold, binary_metrics
from softverify.bio.questions import validation_perts_mask

FORMAT_VERSION = 1


@dataclass
class FitConfig:
    hidden: tuple[int, ...] = (128, 32)
    dropout: float = 0.2
    lr: float = 2e-3
    weight_decay: float = 1e-5
    batch_size: int = 2048
    max_epochs: int = 12
    patience: int = 2
    val_fraction: float = 0.1
    seed: int = 0
    threads: int = 1
    max_rows: int | None = None  # subsample training rows (tests, quick runs)


class PairMLP(nn.Module):
    """``MLP([e(pert), e(gene)])`` -> logit.

    For one-hot inputs the first linear layer is two lookup tables (``W_p[pert] +
    W_g[gene]``), which is exactly a linear layer on the concatenated one-hot vectors
    without materialising a vocab-sized input.
    """

    def __init__(self, n_genes: int, table: torch.Tensor | None, hidden: tuple[int, ...], dropout: float):
        super().__init__()
        h0 = hidden[0]
        if table is None:
            self.pert_in = nn.Embedding(n_genes, h0)
            self.gene_in = nn.Embedding(n_genes, h0)
            nn.init.normal_(self.pert_in.weight, std=0.05)
            nn.init.normal_(self.gene_in.weight, std=0.05)
            self.bias0 = nn.Parameter(torch.zeros(h0))
            self.register_buffer("table", torch.zeros(0, 0), persistent=False)
        else:
            self.register_buffer("table", table.float())
            self.first = nn.Linear(2 * table.shape[1], h0)
        layers: list[nn.Module] = [nn.ReLU(), nn.Dropout(dropout)]
        for a, b in zip(hidden[:-1], hidden[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden[-1], 1))
        self.rest = nn.Sequential(*layers)
        self.onehot = table is None

    def forward(self, pi: torch.Tensor, gi: torch.Tensor) -> torch.Tensor:
        if self.onehot:
            h = self.pert_in(pi) + self.gene_in(gi) + self.bias0
        else:
            h = self.first(torch.cat([self.table[pi], self.table[gi]], dim=1))
        return self.rest(h).squeeze(1)


@dataclass
class WorldModel:
    """A trained pair MLP with its gene vocabulary; see :meth:`predict_proba`."""

    net: PairMLP
    embedding: GeneEmbedding
    meta: dict = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    # ----------------------------------------------------------------- training
    @classmethod
    def fit(cls, train: pd.DataFrame, embedding: GeneEmbedding, cfg: FitConfig | None = None,
            cell_lines: list[str] | None = None, log=print) -> "WorldModel":
        """Train on rows (pert, gene, label); rows whose genes lack an embedding are dropped."""
        cfg = cfg or FitConfig()
        torch.manual_seed(cfg.seed)
        torch.set_num_threads(cfg.threads)
        pi, gi = embedding.index(list(train["pert"])), embedding.index(list(train["gene"]))
        ok = (pi >= 0) & (gi >= 0)
        if ok.sum() < 10:
            raise ValueError(f"only {int(ok.sum())} training rows have embeddings for both genes; "
                             "is the embedding built for these genes?")
        df = train.loc[ok].reset_index(drop=True)
        pi, gi = pi[ok], gi[ok]
        if cfg.max_rows is not None and len(df) > cfg.max_rows:
            sel = np.sort(np.random.default_rng(cfg.seed).choice(len(df), cfg.max_rows, replace=False))
            df, pi, gi = df.iloc[sel].reset_index(drop=True), pi[sel], gi[sel]
        if embedding.vectors is None:
            # One-hot rows of genes never seen in training stay at their random init:
            # shrink the vocabulary to the training genes so those get NaN, not noise.
            embedding = GeneEmbedding("onehot", sorted(set(df["pert"]) | set(df["gene"])), None, embedding.meta)
            pi, gi = embedding.index(list(df["pert"])), embedding.index(list(df["gene"]))
        y = df["label"].to_numpy().astype(np.float32)
        val = validation_perts_mask(df["pert"].to_numpy(), cfg.val_fraction, cfg.seed)
        if val.all() or not val.any() or len(np.unique(y[val])) < 2:
            raise ValueError("validation split by perturbation is degenerate; use more rows or another val_fraction")
        table = None if embedding.vectors is None else torch.from_numpy(np.asarray(embedding.vectors, np.float32))
        net = PairMLP(len(embedding.symbols), table, tuple(cfg.hidden), cfg.dropout)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        lossf = nn.BCEWithLogitsLoss()
        t_p, t_g, t_y = (torch.from_numpy(a) for a in (pi[~val], gi[~val], y[~val]))
        v_p, v_g, v_y = pi[val], gi[val], y[val]
        best = (-1.0, None, 0)
        gen = torch.Generator().manual_seed(cfg.seed)
        history = []
        for epoch in range(cfg.max_epochs):
            net.train()
            perm = torch.randperm(len(t_y), generator=gen)
            total = 0.0
            for s in range(0, len(perm), cfg.batch_size):
                b = perm[s:s + cfg.batch_size]
                loss = lossf(net(t_p[b], t_g[b]), t_y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            pv = _predict_idx(net, v_p, v_g)
            auc = binary_metrics(pv, v_y, 0.5)["auroc"]
            history.append({"epoch": epoch + 1, "train_loss": total / len(t_y), "val_auroc": auc})
            log(f"epoch {epoch + 1}: train_loss={total / len(t_y):.4f} val_auroc={auc:.4f}")
            if auc > best[0] + 1e-4:
                best = (auc, {k: v.clone() for k, v in net.state_dict().items()}, epoch + 1)
            elif epoch + 1 - best[2] >= cfg.patience:
                break
        net.load_state_dict(best[1])
        pv = _predict_idx(net, v_p, v_g)
        thr = best_mcc_threshold(pv, v_y)
        meta = {
            "format": FORMAT_VERSION, "embedding_kind": embedding.kind, "embedding_meta": embedding.meta,
            "cell_lines": list(cell_lines or sorted(set(train.get("cell_line", pd.Series(dtype=str))))),
            "threshold": thr, "best_epoch": best[2], "val": binary_metrics(pv, v_y, thr),
            "train_rows": int((~val).sum()), "val_rows": int(val.sum()), "dropped_rows": int((~ok).sum()),
            "fit_config": asdict(cfg), "history": history,
        }
        return cls(net.eval(), embedding, meta)

    # ----------------------------------------------------------------- inference
    def predict_proba(self, perts: list[str], genes: list[str]) -> np.ndarray:
        """P(DE) per (pert, gene) pair; NaN where either gene has no embedding."""
        if len(perts) != len(genes):
            raise ValueError(f"{len(perts)} perts but {len(genes)} genes")
        pi, gi = self.embedding.index(list(perts)), self.embedding.index(list(genes))
        ok = (pi >= 0) & (gi >= 0)
        out = np.full(len(perts), np.nan, dtype=np.float64)
        if ok.any():
            out[ok] = _predict_idx(self.net, pi[ok], gi[ok])
        return out

    def evaluate(self, df: pd.DataFrame) -> dict[str, float]:
        return binary_metrics(self.predict_proba(list(df["pert"]), list(df["gene"])),
                              df["label"].to_numpy(), self.threshold)

    # ----------------------------------------------------------------- storage
    def save(self, out_dir: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        with atomic_dir(out) as tmp:
            state = {k: v.contiguous() for k, v in self.net.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"))
            meta = {**self.meta, "symbols": self.embedding.symbols,
                    "hidden": list(self.net_hidden()), "dropout": self.meta.get("fit_config", {}).get("dropout", 0.0)}
            (tmp / "worldmodel.json").write_text(json.dumps(meta, indent=1, default=float))
        return out

    def net_hidden(self) -> tuple[int, ...]:
        return tuple(self.meta.get("fit_config", {}).get("hidden", FitConfig().hidden))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "WorldModel":
        from safetensors.torch import load_file

        d = Path(path)
        mp = require_world_model_dir(d)
        meta = json.loads(mp.read_text())
        if meta.get("model_kind") == "gbdt":  # the feature model (its own loader, same interface)
            from softverify.bio.gbdt_worldmodel import GBDTWorldModel

            return GBDTWorldModel.load(d)
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"world model {str(d)!r} has format {meta.get('format')}; expected {FORMAT_VERSION}")
        state = load_file(str(d / "model.safetensors"))
        symbols = meta.pop("symbols")
        table = state.get("table")
        emb = GeneEmbedding(meta["embedding_kind"], symbols,
                            None if table is None else table.numpy(), meta.get("embedding_meta", {}))
        net = PairMLP(len(symbols), table, tuple(meta.pop("hidden")), float(meta.pop("dropout")))
        net.load_state_dict(state)
        return cls(net.eval(), emb, meta)


@torch.no_grad()
def _predict_idx(net: PairMLP, pi: np.ndarray, gi: np.ndarray, batch: int = 65536) -> np.ndarray:
    net.eval()
    out = []
    for s in range(0, len(pi), batch):
        p = torch.from_numpy(np.asarray(pi[s:s + batch]))
        g = torch.from_numpy(np.asarray(gi[s:s + batch]))
        out.append(torch.sigmoid(net(p, g)).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def target_prior(train: pd.DataFrame) -> dict[str, float]:
    """Baseline: how often each target gene is DE in the training rows (any perturbation)."""
    return train.groupby("gene")["label"].mean().to_dict()


def pert_prior(train: pd.DataFrame) -> dict[str, float]:
    """Baseline: how often knocking each gene down changes a target in the training rows
    (the knockdown's strength elsewhere). Look it up by the *perturbed* gene; a constant
    within a perturbation, so it can only rank perturbations against each other."""
    return train.groupby("pert")["label"].mean().to_dict()


def predict_prior(prior: dict[str, float], genes: list[str]) -> np.ndarray:
    """The prior's value per symbol (a target gene for :func:`target_prior`, a perturbed
    gene for :func:`pert_prior`); NaN where the training rows never saw it."""
    return np.array([prior.get(g, np.nan) for g in genes], dtype=np.float64)
