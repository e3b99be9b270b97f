"""Knowledge-base coverage of the PerturbQA genes (perturbed + target) per cell line.

    python benchmarks/bio_kb_coverage.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from softverify.bio import perturbqa
from softverify.bio.genes import GeneKB

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    a = ap.parse_args()
    data = Path(a.data).resolve()
    g = data / "genes"
    kb = GeneKB.build(g / "Homo_sapiens.gene_info.gz", g / "gene2go_human.gz", g / "go-basic.obo.gz",
                      g / "gene_summaries_ncbi_uniprot.json")
    res = {}
    cells = ["k562", "rpe1", "hepg2"]
    for c in cells + ["all"]:
        df = perturbqa.load_tables(cells if c == "all" else [c], "de", mirror=data / "perturbqa")
        res[c] = {
            "all_genes": kb.coverage(sorted(set(df["pert"]) | set(df["gene"]))),
            "perturbed": kb.coverage(sorted(set(df["pert"]))),
        }
    df = perturbqa.load_tables(cells, "de", mirror=data / "perturbqa")
    res["unresolved"] = [s for s in sorted(set(df["pert"]) | set(df["gene"])) if kb.resolve(s) is None]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
