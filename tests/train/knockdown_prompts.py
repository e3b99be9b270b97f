"""Prompt files of K562 knockdown questions for the run tests (imported by name: the test
directories have no packages, and ``conftest`` is ambiguous across them)."""
from __future__ import annotations

import json
from pathlib import Path


def write_knockdown_questions(path: Path, rows: list[dict]) -> Path:
    """A prompt file of K562 knockdown questions, one per row (pert, gene, label, split)."""
    with open(path, "w") as f:
        for r in rows:
            q = f"Is a knockdown of {r['pert']} in K562 cells likely to result in differential expression of {r['gene']}?"
            f.write(json.dumps({"question": q, "cell_line": "k562", **r}) + "\n")
    return path


def whole_gene_test_rows(genes: list[str], perts: tuple[str, ...] = ("TP53", "MYC", "GATA1", "KLF1")) -> list[dict]:
    """A test split of whole target genes, each asked about every knockdown with both labels,
    so a periodic eval has a per-gene AUROC to report."""
    return [{"pert": a, "gene": g, "label": int(j < len(perts) // 2), "split": "test"}
            for g in genes for j, a in enumerate(perts)]
