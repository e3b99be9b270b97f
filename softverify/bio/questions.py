"""rbio1 knockdown questions from PerturbQA rows: templates, splits, balanced sampling.

A row ``(pert, gene, cell_line, label)`` becomes the user turn "Is a knockdown of
{pert} in {cell} cells likely to result in differential expression of {gene}? ..."
(the rbio1 wording) or one of its paraphrases. Negated paraphrases ask the opposite
("... leave {gene} unchanged?"), so their ``label`` is flipped: ``label`` is always the
correct yes(1)/no(0) answer to the question *as asked*, which is what the hard verifier
compares against. ``negated`` tells a world-model verifier to use 1 - p(DE).

Splits (see :func:`select_split`): ``train``/``val``/``test`` (upstream train/test by
perturbation; ``val`` is a seeded share of each line's upstream *train* perturbations that
``train`` then leaves out, so recipes are chosen without looking at test),
``loco_train``/``loco_test`` (leave one cell line out) and ``gene_train``/``gene_test``
(held-out genes). Everything is deterministic for a given ``DataConfig.seed``; the
validation perturbations depend on ``DataConfig.val_seed`` only, so runs with different
seeds are compared on the same validation set.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from softverify.bio import perturbqa
from softverify.config import ConfigError, DataConfig

TASK = "de"

# (template, negated). Index = the ``template`` column; append only, never reorder.
TEMPLATES: tuple[tuple[str, bool], ...] = (
    ("Is a knockdown of {pert} in {cell} cells likely to result in differential expression of {gene}? "
     "The answer is either yes or no.", False),
    ("In {cell} cells, would a CRISPRi knockdown of {pert} change the expression level of {gene}? "
     "Answer yes or no.", False),
    ("If {pert} is knocked down in {cell} cells, is {gene} likely to be differentially expressed "
     "compared with control cells? The answer is either yes or no.", False),
    ("Does silencing {pert} in {cell} cells significantly alter {gene} expression? Answer yes or no.", False),
    ("Is a knockdown of {pert} in {cell} cells likely to leave the expression of {gene} unchanged? "
     "The answer is either yes or no.", True),
    ("In {cell} cells, would {gene} expression stay the same, i.e. not be differentially expressed, "
     "after a knockdown of {pert}? Answer yes or no.", True),
)

CELL_DISPLAY = {"k562": "K562", "rpe1": "RPE1", "hepg2": "HepG2", "jurkat": "Jurkat"}

SPLIT_NAMES = ("train", "val", "test", "loco_train", "loco_test", "gene_train", "gene_test")

COLUMNS = ("prompt_id", "system", "question", "pert", "gene", "cell_line", "label", "template", "negated", "task")


def stable_int(*parts: object) -> int:
    """A 64-bit integer from strings, stable across processes (unlike ``hash``)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def render_question(pert: str, gene: str, cell_line: str, template: int) -> str:
    if not 0 <= template < len(TEMPLATES):
        raise ValueError(f"template {template} out of range; expected 0..{len(TEMPLATES) - 1}")
    cell = CELL_DISPLAY.get(cell_line, cell_line)
    return TEMPLATES[template][0].format(pert=pert, gene=gene, cell=cell)


def hashed_share(keys, fraction: float, salt: str, seed: int) -> set:
    """The keys (strings, or tuples of strings) whose seeded hash ``stable_int(salt, seed,
    *key)`` falls below ``fraction``: the same answer for a key in any table and process."""
    cut = int(fraction * 2**64)
    return {k for k in keys if stable_int(salt, seed, *(k if isinstance(k, tuple) else (k,))) < cut}


def held_out_genes(genes: set[str] | list[str], fraction: float, seed: int) -> set[str]:
    """The genes whose seeded hash falls below ``fraction``: same answer for a gene in any table."""
    return hashed_share(genes, fraction, "heldout-gene", seed)


def validation_perts_mask(perts: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """Boolean mask of a world model's validation rows: a seeded-hash ``frac`` of the
    perturbations, so no perturbation is in both the fitting and the validation rows."""
    return np.isin(perts, list(hashed_share(pd.unique(perts), frac, "wm-val", seed)))


def validation_perts(table: pd.DataFrame, fraction: float, seed: int) -> set[tuple[str, str]]:
    """The (cell_line, pert) pairs of the validation split: a seeded-hash ``fraction`` of each
    line's upstream *train* perturbations (a test perturbation is never drawn)."""
    if fraction <= 0:
        return set()
    tr = table[table["split"] == "train"][["cell_line", "pert"]].drop_duplicates()
    return hashed_share(zip(tr["cell_line"], tr["pert"]), fraction, "val-pert", seed)


def _split_train_val(df: pd.DataFrame, cfg: DataConfig, split: str) -> pd.DataFrame:
    train = df[df["split"] == "train"]
    val = validation_perts(train, cfg.val_fraction, cfg.val_seed)
    if not val:
        if split == "val":
            raise ConfigError("split 'val' is empty: data.val_fraction is 0 (set it in (0, 1) to hold out "
                              "a share of the train perturbations)")
        return train
    key = pd.MultiIndex.from_arrays([train["cell_line"], train["pert"]])
    in_val = key.isin(list(val))
    return train[in_val] if split == "val" else train[~in_val]


def resolve_holdout(cfg: DataConfig, cell_lines: list[str]) -> str:
    h = cfg.holdout_cell_line
    if h is None:
        if len(cell_lines) < 2:
            raise ConfigError(
                f"leave-one-cell-line-out needs at least two data.cell_lines (got {cell_lines}) "
                "or data.holdout_cell_line set"
            )
        return cell_lines[-1]
    try:
        return perturbqa.check_cell_line(h)
    except ValueError as e:
        raise ConfigError(f"data.holdout_cell_line: {e}") from None


def select_split(cfg: DataConfig, split: str) -> pd.DataFrame:
    """Rows (pert, gene, label, split, cell_line) of the named split, before sampling.

    - ``train``/``test``: upstream split of every cell line in ``cfg.cell_lines``, less the
      validation perturbations for ``train``; ``val``: the rows of those perturbations
      (a seeded ``cfg.val_fraction`` of each line's train perturbations).
    - ``loco_train``: all rows (both upstream splits) of the cell lines other than the
      held-out one; ``loco_test``: the held-out line's upstream test rows. The held-out
      line is ``cfg.holdout_cell_line`` (it need not be in ``cfg.cell_lines``) or the last
      of ``cfg.cell_lines``.
    - ``gene_train``/``gene_test``: a seeded ``cfg.holdout_gene_fraction`` of gene symbols
      is held out; test = rows whose target gene is held out, train = rows where neither
      the perturbed nor the target gene is (rows with only the perturbation held out are
      in neither, so no gene of the test set is seen in training).
    """
    if split not in SPLIT_NAMES:
        raise ConfigError(f"unknown data split {split!r}; expected one of {list(SPLIT_NAMES)}")
    try:
        cells = perturbqa.parse_cell_lines(cfg.cell_lines)
    except ValueError as e:
        raise ConfigError(f"data.cell_lines: {e}") from None
    mirror = cfg.mirror
    if split in ("train", "val", "test"):
        df = perturbqa.load_tables(cells, "de", mirror=mirror)
        return df[df["split"] == "test"] if split == "test" else _split_train_val(df, cfg, split)
    if split.startswith("loco_"):
        hold = resolve_holdout(cfg, cells)
        if split == "loco_test":
            df = perturbqa.load_table(hold, "de", mirror=mirror)
            return df[df["split"] == "test"]
        others = [c for c in cells if c != hold]
        if not others:
            raise ConfigError(f"loco_train: data.cell_lines {cells} has no cell line besides the held-out {hold!r}")
        return perturbqa.load_tables(others, "de", mirror=mirror)
    df = perturbqa.load_tables(cells, "de", mirror=mirror)
    held = held_out_genes(set(df["gene"]) | set(df["pert"]), cfg.holdout_gene_fraction, cfg.seed)
    if split == "gene_test":
        return df[df["gene"].isin(held)]
    return df[~df["gene"].isin(held) & ~df["pert"].isin(held)]


def sample_rows(df: pd.DataFrame, n: int | None, balance: bool, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` rows (all when None), 50/50 by label when ``balance``, shuffled.

    Balanced sampling takes ``n // 2`` positives and the rest negatives; when a class is
    short it takes all of it and fills the rest from the other class only if
    ``balance`` is off, so a balanced set is never silently unbalanced (it is smaller).
    """
    df = df.sort_values(["cell_line", "pert", "gene"], kind="stable").reset_index(drop=True)
    if balance:
        pos = np.flatnonzero(df["label"].to_numpy() == 1)
        neg = np.flatnonzero(df["label"].to_numpy() == 0)
        if n is None:
            kp = kn = min(len(pos), len(neg))
        else:
            kp, kn = min(n - n // 2, len(pos)), min(n // 2, len(neg))
            if kp < n - n // 2 or kn < n // 2:
                kp = kn = min(kp, kn)
        idx = np.concatenate([rng.choice(pos, kp, replace=False), rng.choice(neg, kn, replace=False)])
    else:
        m = len(df) if n is None else min(n, len(df))
        idx = rng.choice(len(df), m, replace=False)
    idx = rng.permutation(idx)
    return df.iloc[idx].reset_index(drop=True)


def whole_gene_rows(df: pd.DataFrame, n_genes: int | None, negatives_per_gene: int | None,
                    rng: np.random.Generator) -> pd.DataFrame:
    """Rows of whole target genes, for PerturbQA's per-gene AUROC: ``n_genes`` target genes
    (all when None) drawn among those whose rows hold both labels, each with every positive
    row and ``negatives_per_gene`` of its negatives (all when None), shuffled."""
    df = df.sort_values(["cell_line", "gene", "pert"], kind="stable").reset_index(drop=True)
    stats = df.groupby(["cell_line", "gene"], sort=True)["label"].agg(["sum", "count"])
    both = stats[(stats["sum"] > 0) & (stats["sum"] < stats["count"])].index.to_list()
    if not both:
        raise ConfigError("no target gene of this split holds both labels; per-gene AUROC is undefined")
    if n_genes is not None and n_genes < len(both):
        both = [both[i] for i in sorted(rng.choice(len(both), n_genes, replace=False))]
    key = pd.MultiIndex.from_arrays([df["cell_line"], df["gene"]])
    df = df[key.isin(both)].reset_index(drop=True)
    if negatives_per_gene is not None:
        keep = df["label"].to_numpy() == 1
        for _, idx in df[~keep].groupby(["cell_line", "gene"], sort=True).groups.items():
            idx = np.asarray(idx)
            keep[rng.choice(idx, min(negatives_per_gene, len(idx)), replace=False)] = True
        df = df[keep]
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def build_rows(df: pd.DataFrame, negated_fraction: float, rng: np.random.Generator) -> pd.DataFrame:
    """Attach template, negation, question text, flipped label and a stable prompt id."""
    plain = [i for i, (_, neg) in enumerate(TEMPLATES) if not neg]
    negs = [i for i, (_, neg) in enumerate(TEMPLATES) if neg]
    n = len(df)
    negated = rng.random(n) < negated_fraction
    tmpl = np.where(negated, rng.choice(negs, n), rng.choice(plain, n)).astype(np.int64)
    de = df["label"].to_numpy().astype(np.int64)
    label = np.where(negated, 1 - de, de)
    questions = [
        render_question(p, g, c, int(t))
        for p, g, c, t in zip(df["pert"], df["gene"], df["cell_line"], tmpl)
    ]
    ids = [f"pqa-{TASK}-{c}-{p}-{g}-t{t}" for p, g, c, t in zip(df["pert"], df["gene"], df["cell_line"], tmpl)]
    return pd.DataFrame({
        "prompt_id": ids,
        "system": "",  # none of its own: the prompt style's (softverify.task.prompts.row_messages)
        "question": questions,
        "pert": df["pert"].astype(str).to_numpy(),
        "gene": df["gene"].astype(str).to_numpy(),
        "cell_line": df["cell_line"].astype(str).to_numpy(),
        "label": label,
        "template": tmpl,
        "negated": negated,
        "task": TASK,
    })


def question_frame(cfg: DataConfig, split: str, limit: int | None = None,
                   whole_genes: tuple[int | None, int | None] | None = None) -> pd.DataFrame:
    """:func:`load_questions` as a pandas frame (for tools that do not need Arrow).

    ``whole_genes=(n_genes, negatives_per_gene)`` draws whole target genes
    (:func:`whole_gene_rows`) instead of ``limit`` sampled questions."""
    rows = select_split(cfg, split)
    if rows.empty:
        raise ConfigError(f"split {split!r} of cell lines {cfg.cell_lines} has no rows")
    n = limit if limit is not None else cfg.max_prompts
    if n is not None and n <= 0:
        raise ValueError(f"limit must be positive, got {n}")
    rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, stable_int("questions", split) & 0xFFFFFFFF])
    if whole_genes is not None:
        picked = whole_gene_rows(rows, whole_genes[0], whole_genes[1], rng)
    else:
        picked = sample_rows(rows, n, cfg.balance, rng)
    return build_rows(picked, cfg.negated_fraction, rng)


def load_questions(cfg: DataConfig, split: str, limit: int | None = None,
                   whole_genes: tuple[int | None, int | None] | None = None):
    """The trainer's entry point: a ``datasets.Dataset`` of rbio1 questions for ``split``.

    Columns: prompt_id, system, question, pert, gene, cell_line, label (answer to the
    question as asked, 0/1), template, negated, task. ``limit`` overrides
    ``cfg.max_prompts``; ``cfg.balance`` makes labels 50/50 (before negation, which is
    label-independent, so the asked-answer labels stay balanced in expectation).
    """
    import datasets

    return datasets.Dataset.from_pandas(question_frame(cfg, split, limit, whole_genes), preserve_index=False)


def save_questions(ds, path: str | os.PathLike) -> Path:
    """Write a question dataset to parquet atomically (``.parquet`` suffix required)."""
    p = Path(path)
    if p.suffix != ".parquet":
        raise ValueError(f"question output {str(p)!r} must end in .parquet")
    from softverify.infra.fsutil import atomic_file

    with atomic_file(p) as tmp:
        ds.to_parquet(str(tmp))
    return p
