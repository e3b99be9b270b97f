"""Prompt datasets for training and evaluation.

``source='perturbqa'`` builds rbio1 knockdown questions from the PerturbQA tables (see
:mod:`softverify.bio.questions`); ``source='file'`` reads any parquet/JSONL of prompts with
a ``question`` column (and optional ``system``/``messages``) plus metadata columns that
verifiers read (``label`` for the hard verifier, ``pert``/``gene`` for world models).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from softverify.config import DataConfig


def load_prompts(cfg: DataConfig, split: str, limit: int | None = None):
    """A ``datasets.Dataset`` of prompt rows for ``split`` (plus ``cfg.extra_tasks`` rows
    when ``split`` is the training split)."""
    if cfg.source == "perturbqa":
        from softverify.bio.questions import load_questions

        ds = load_questions(cfg, split, limit)
    else:
        ds = _load_file(cfg, split, limit)
    if cfg.extra_tasks and split == cfg.split:
        ds = _mix_extra_tasks(ds, cfg)
    return ds


def load_eval_prompts(cfg: DataConfig, split: str | None = None, limit: int | None = None):
    """The periodic eval's rows: whole target genes when ``cfg.eval_genes`` is set (every
    positive and up to ``cfg.eval_negatives_per_gene`` negatives of each, for the per-gene
    AUROC), else ``limit`` (default ``cfg.eval_size``) balanced questions. Fixed for a given
    config: the same rows at every eval of a run and across runs of different ``cfg.seed``
    only through the validation split's own seed."""
    split = split or cfg.eval_split
    if cfg.source == "perturbqa" and cfg.eval_genes is not None:
        from softverify.bio.questions import load_questions

        return load_questions(cfg.model_copy(update={"seed": cfg.val_seed}), split,
                              whole_genes=(cfg.eval_genes, cfg.eval_negatives_per_gene))
    return load_prompts(cfg, split, limit or cfg.eval_size)


EVAL_PROTOCOLS = ("sample", "genes", "perturbqa")


def load_protocol_prompts(cfg: DataConfig, protocol: str, split: str, limit: int | None = None):
    """Eval rows by protocol (``softverify eval --protocol``):

    - ``sample``: ``limit`` balanced questions of ``split`` (the classification view);
    - ``genes``: whole target genes of ``split`` as the periodic eval draws them
      (``data.eval_genes``, ``data.eval_negatives_per_gene``);
    - ``perturbqa``: PerturbQA's own protocol, the number to quote: every row of the upstream
      *test* split of each of ``data.cell_lines`` whose target gene holds both labels, asked
      with the plain (non-negated) paraphrases, no balancing, no sampling.
    """
    if protocol not in EVAL_PROTOCOLS:
        raise ValueError(f"unknown eval protocol {protocol!r}; expected one of {list(EVAL_PROTOCOLS)}")
    if protocol == "sample":
        return load_prompts(cfg, split, limit)
    if cfg.source != "perturbqa":
        raise ValueError(f"eval protocol {protocol!r} needs data.source='perturbqa' (got {cfg.source!r})")
    from softverify.bio.questions import load_questions

    if protocol == "genes":
        return load_eval_prompts(cfg, split)
    full = cfg.model_copy(update={"negated_fraction": 0.0, "seed": cfg.val_seed})
    return load_questions(full, "test", whole_genes=(None, None))


def _coexpression_rows(task, seed: int):
    """'Are gene A and gene B likely to be co-expressed?' from the task's gene x gene matrix."""
    from softverify.bio.coexpression import CoexpressionMatrix, coexpression_questions

    m = CoexpressionMatrix.load(task.matrix)
    return coexpression_questions(m, task.num_prompts, "train", task.top_fraction, context=task.context, seed=seed)


#: an extra task's ``task`` name -> the function that writes its training questions (a DataFrame
#: with the prompt columns); a new extra task is one entry here and one value of ``ExtraTask.task``
EXTRA_TASK_ROWS = {"coexpression": _coexpression_rows}


def _mix_extra_tasks(ds, cfg: DataConfig):
    """Append each extra task's training questions (order is shuffled by PromptOrder)."""
    import datasets
    import pandas as pd

    extra = pd.concat([EXTRA_TASK_ROWS[t.task](t, cfg.seed) for t in cfg.extra_tasks], ignore_index=True)
    missing = [c for c in ds.column_names if c not in extra.columns]
    if missing:
        raise ValueError(f"extra tasks cannot be mixed into prompts with columns {missing} they do not have")
    extra_ds = datasets.Dataset.from_pandas(extra[ds.column_names], preserve_index=False).cast(ds.features)
    return datasets.concatenate_datasets([ds, extra_ds])


def _load_file(cfg: DataConfig, split: str, limit: int | None):
    import datasets

    path = Path(cfg.path or "")
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} not found")
    if path.suffix == ".parquet":
        ds = datasets.Dataset.from_parquet(str(path))
    elif path.suffix in (".jsonl", ".json"):
        ds = datasets.Dataset.from_json(str(path))
    else:
        raise ValueError(f"prompt file {str(path)!r} must end in .parquet or .jsonl, got {path.suffix!r}")
    if "question" not in ds.column_names and "messages" not in ds.column_names:
        raise ValueError(f"prompt file {str(path)!r} needs a 'question' or 'messages' column; has {ds.column_names}")
    if "label" in ds.column_names:  # a bad label is one line here, not an actor's death at its first step
        _check_labels(ds["label"], path)
    if "split" in ds.column_names:
        ds = ds.filter(lambda r: r["split"] == split)
        if len(ds) == 0:
            raise ValueError(f"prompt file {str(path)!r} has no rows with split == {split!r}")
    if "prompt_id" not in ds.column_names:
        ds = ds.add_column("prompt_id", [f"{path.stem}-{i}" for i in range(len(ds))])
    n = limit or cfg.max_prompts
    if n is not None and len(ds) > n:
        ds = ds.shuffle(seed=cfg.seed).select(range(n))
    return ds


def _check_labels(labels: list, path: Path) -> None:
    """Every label a prompt file gives must read as yes/no (null: unlabelled, allowed)."""
    from softverify.task.answer import LABEL_VALUES, label_to_int

    for i, v in enumerate(labels):
        if v is None:
            continue
        try:
            label_to_int(v)
        except ValueError:
            where = f"line {i + 1}" if path.suffix in (".jsonl", ".json") else f"row {i}"
            raise ValueError(f"prompt file {str(path)!r}, {where}: label {v!r} is not a yes/no label; expected "
                             f"{LABEL_VALUES} (or null for an unlabelled question)") from None


class PromptOrder:
    """Deterministic epoch-wise shuffled order over ``n`` prompts.

    The position is a single integer (prompts consumed so far), so a checkpoint that
    stores it resumes on exactly the next prompt with the same order.
    """

    def __init__(self, n: int, seed: int, position: int = 0):
        if n <= 0:
            raise ValueError("the training prompt set is empty")
        self.n, self.seed, self.position = n, seed, position

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            epoch, offset = divmod(self.position, self.n)
            out.append(int(self._perm(epoch)[offset]))
            self.position += 1
        return out


class StratifiedOrder:
    """Prompt order that alternates between two pools (e.g. the rows a world model answers
    "yes" and those it answers "no"), each shuffled epoch-wise like :class:`PromptOrder`.

    Every step of an even number of prompts is then exactly half from each pool. Why: with
    binary answers GRPO pushes the shared "answer yes" direction by (prompts favouring yes)
    - (prompts favouring no) each step; Adam turns even a small, random net push into a
    full-size step, and the policy random-walks onto one answer (measured: "yes" for every
    question after ~700 questions). Balanced steps cancel that push, leaving the
    gene-specific signal. The position is one integer, as for PromptOrder (resume-exact).
    """

    def __init__(self, pools: list[list[int]], seed: int, position: int = 0):
        if len(pools) != 2 or not all(pools):
            raise ValueError(f"stratified order needs two non-empty pools; got sizes {[len(p) for p in pools]}")
        self.pools = [np.asarray(p, dtype=np.int64) for p in pools]
        self.orders = [PromptOrder(len(p), seed + 7 * k) for k, p in enumerate(self.pools)]
        self.n = sum(len(p) for p in pools)
        self.position = position

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            pool, idx = self.position % 2, self.position // 2
            o = self.orders[pool]
            epoch, offset = divmod(idx, o.n)
            out.append(int(self.pools[pool][o._perm(epoch)[offset]]))
            self.position += 1
        return out
