from __future__ import annotations

import gzip

import pytest

from softverify.bio import gene_sources as src
from softverify.bio.genes import GeneKB


def test_symbol_alias_and_ensembl_resolution(gene_kb):
    assert gene_kb.resolve("TP53") == "TP53"
    assert gene_kb.resolve("tp53") == "TP53"
    # PerturbQA uses AARS, which NCBI renamed AARS1 (AARS is now an alias).
    assert gene_kb.resolve("AARS") == "AARS1"
    assert gene_kb.resolve("MT-ND5") == "ND5"
    assert gene_kb.resolve("ENSG00000121410") == "A1BG"
    assert gene_kb.resolve("NOT_A_GENE_XYZ") is None
    rec = gene_kb.gene("A1BG")
    assert rec.full_name == "alpha-1-B glycoprotein" and rec.chromosome == "19"
    assert rec.map_location == "19q13.43" and rec.type == "protein-coding" and "A1B" in rec.synonyms


def test_go_terms_by_aspect_with_names_and_definitions(gene_kb):
    mf = gene_kb.go_terms("TP53", "MF")
    assert mf and all(t.aspect == "MF" for t in mf)
    dna = [t for t in mf if t.go_id == "GO:0003677"]
    assert dna and dna[0].name == "DNA binding" and "DNA" in dna[0].definition
    aspects = {t.aspect for t in gene_kb.go_terms("TP53")}
    assert aspects == {"BP", "MF", "CC"}
    with pytest.raises(ValueError, match="unknown GO aspect 'XX'"):
        gene_kb.go_terms("TP53", "XX")
    assert gene_kb.go_terms("NOT_A_GENE_XYZ") == []


def test_description_has_summary_and_go(gene_kb):
    text = gene_kb.describe("KLHL17")
    assert text.startswith("Gene KLHL17:") and "Kelch" in text and "Biological process:" in text


def test_perturbqa_coverage(gene_kb, pqa_mirror):
    from softverify.bio.perturbqa import load_table

    df = load_table("k562", "de", mirror=pqa_mirror)
    cov = gene_kb.coverage(sorted(set(df["pert"]) | set(df["gene"])))
    assert cov["frac_resolved"] > 0.99 and cov["frac_with_go"] > 0.97
    assert cov["resolved_via_alias"] > 10


def test_save_load_roundtrip(gene_kb, tmp_path):
    gene_kb.save(tmp_path / "kb")
    kb2 = GeneKB.load(tmp_path / "kb")
    assert kb2.resolve("AARS") == "AARS1"
    assert kb2.go_terms("TP53") == gene_kb.go_terms("TP53")
    assert kb2.describe("KLHL17") == gene_kb.describe("KLHL17")
    with pytest.raises(FileNotFoundError, match="genes build"):
        GeneKB.load(tmp_path / "missing")


def _write_small(tmp_path):
    gi = tmp_path / "gene_info.gz"
    with gzip.open(gi, "wt") as f:
        f.write("#tax_id\tGeneID\tSymbol\tLocusTag\tSynonyms\tdbXrefs\tchromosome\tmap_location\tdescription\t"
                "type_of_gene\tSymbol_from_nomenclature_authority\tFull_name_from_nomenclature_authority\n")
        f.write("9606\t1\tAAA\t-\tOLD1|SHARED\t-\t1\t1p1\tgene a\tprotein-coding\tAAA\tgene a\n")
        f.write("9606\t2\tBBB\t-\tSHARED\t-\t2\t2p1\tgene b\tpseudo\tBBB\tgene b\n")
        f.write("10090\t3\tCCC\t-\t-\t-\t3\t3p1\tmouse\tprotein-coding\tCCC\tmouse\n")
    g2 = tmp_path / "gene2go"
    g2.write_text(
        "\t".join(src.GENE2GO_COLUMNS + ("PubMed",)) + "\n"
        "9606\t1\tGO:0000002\tIDA\t-\tx\tProcess\t-\n"
        "9606\t1\tGO:0000003\tIDA\tNOT\tx\tProcess\t-\n"
        "9606\t2\tGO:0000099\tIEA\t-\tx\tFunction\t-\n"
        "9606\t2\tGO:0008150\tND\t-\tx\tProcess\t-\n"
    )
    obo = tmp_path / "go.obo"
    obo.write_text(
        "format-version: 1.2\n\n[Term]\nid: GO:0000002\nname: mito thing\nnamespace: biological_process\n"
        'def: "Keeps it." []\n\n[Term]\nid: GO:0000003\nname: reproduction\nnamespace: biological_process\n\n'
        "[Term]\nid: GO:0000004\nname: binding x\nnamespace: molecular_function\nalt_id: GO:0000099\n\n"
        "[Typedef]\nid: part_of\nname: part of\n"
    )
    return gi, g2, obo


def test_small_files_not_qualifiers_alt_ids_and_shared_alias(tmp_path):
    gi, g2, obo = _write_small(tmp_path)
    kb = GeneKB.build(gi, g2, obo)
    assert kb.symbols() == ["AAA", "BBB"]  # mouse row dropped
    assert kb.resolve("OLD1") == "AAA"
    assert kb.resolve("SHARED") == "AAA"  # protein-coding wins a shared alias
    assert [t.go_id for t in kb.go_terms("AAA")] == ["GO:0000002"]  # NOT row dropped
    bbb = kb.go_terms("BBB")
    assert [(t.go_id, t.aspect, t.name) for t in bbb] == [("GO:0000004", "MF", "binding x")]  # alt id mapped, ND dropped
    assert kb.gene("AAA").summary is None


@pytest.mark.parametrize("which", ["gene_info", "gene2go", "obo"])
def test_swapped_or_bad_files_fail_clearly(tmp_path, which):
    gi, g2, obo = _write_small(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("hello\tworld\n1\t2\n")
    args = {"gene_info": gi, "gene2go": g2, "obo": obo}
    args[which] = bad
    with pytest.raises(ValueError, match="bad.txt"):
        GeneKB.build(**args)


def test_missing_file(tmp_path):
    gi, g2, obo = _write_small(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.gz"):
        GeneKB.build(tmp_path / "nope.gz", g2, obo)
    with pytest.raises(ValueError, match="must be a JSON object"):
        (tmp_path / "s.json").write_text("[1, 2]")
        GeneKB.build(gi, g2, obo, summaries=tmp_path / "s.json")
