"""Bad input, fuzzed with hypothesis: every reader refuses with its documented error type.

Configs and overrides -> only ``ConfigError``; sweep files -> only ``ConfigError``;
PerturbQA CSVs -> only ``DataIntegrityError`` (or a clean, valid table); NCBI gene_info,
gene2go and GO OBO files -> only ``ValueError``; ``.h5ad`` files -> only ``ValueError``;
chat request bodies -> only ``ApiError`` with a 4xx status. Any other exception type is a
traceback a user would see, so it fails the test.
"""
from __future__ import annotations

import gzip
import json
import string
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softverify.bio import gene_sources as src
from softverify.bio.perturbqa import COLUMNS, DataIntegrityError, read_csv_checked
from softverify.config import ConfigError, TrainConfig, build_config, describe, load_config

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

# ------------------------------------------------------------------ values and keys
KEYS = sorted({line.split(" = ")[0] for line in describe()})
SECTIONS = sorted({k.split(".")[0] for k in KEYS})
LEAVES = sorted({k.split(".")[-1] for k in KEYS})
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["hard", "format", "length", "file", "perturbqa", "auto", "-1", "1e-3"]),
)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.sampled_from(LEAVES + ["kind", "weight", "params", "bogus"]), c, max_size=3), max_leaves=8)
sections = st.dictionaries(st.sampled_from(LEAVES + ["bogus"]), values, max_size=4)
config_dicts = st.dictionaries(st.sampled_from(SECTIONS + ["bogus"]), sections | values, max_size=4)


@FUZZ
@given(raw=config_dicts)
def test_config_dicts_raise_only_config_error(raw):
    try:
        cfg = build_config(raw)
    except ConfigError as e:
        assert str(e).strip()
        return
    assert isinstance(cfg, TrainConfig)


override_text = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS + ["a.b", "model", ".x", "x..y", "verifiers.0"]),
              st.one_of(st.text(max_size=15), st.sampled_from(["[", "{a: 1", "[{kind: nope}]", "-5", "null", "!!python/object:os.system ls"]))),
    st.text(max_size=20),
)


@FUZZ
@given(overrides=st.lists(override_text, min_size=1, max_size=4))
def test_config_overrides_raise_only_config_error(overrides):
    try:
        build_config({}, overrides)
    except ConfigError as e:
        assert str(e).strip()


@FUZZ
@given(body=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                      config_dicts.map(lambda d: yaml.safe_dump(d).encode())))
def test_config_files_raise_only_config_error(tmp_path_factory, body):
    p = tmp_path_factory.mktemp("cfg") / "c.yaml"
    p.write_bytes(body)
    try:
        load_config(p)
    except ConfigError as e:
        assert str(p) in str(e) or "invalid config" in str(e)


def test_pathological_yaml_is_refused_by_name(tmp_path):
    for body in (b"[" * 5000, b"\xff\xfe\x00bad", b"!!python/object/apply:os.system ['true']", b"- a\n- b\n"):
        p = tmp_path / "c.yaml"
        p.write_bytes(body)
        with pytest.raises(ConfigError, match="c.yaml"):
            load_config(p)


# ------------------------------------------------------------------ sweep files
sweep_dicts = st.fixed_dictionaries({}, optional={
    "name": values, "output_dir": values, "base": config_dicts | values, "base_config": values,
    "search": st.dictionaries(st.sampled_from(KEYS + ["verifier_sets", "verifiers.hard.weight", "bogus"]),
                              st.one_of(values, st.builds(lambda k, a: {k: a}, st.sampled_from(
                                  ["choice", "grid", "uniform", "loguniform", "randint", "nope"]), values)),
                              max_size=3),
    "tune": st.dictionaries(st.sampled_from(["num_samples", "metric", "mode", "scheduler", "bogus"]), values, max_size=3),
})


@FUZZ
@given(raw=sweep_dicts)
def test_sweep_files_raise_only_config_error(raw):
    from softverify.platform.sweep.spec import parse_sweep

    try:
        parse_sweep(raw)
    except ConfigError as e:
        assert str(e).strip()


# ------------------------------------------------------------------ PerturbQA CSVs
cells = st.one_of(st.sampled_from(["TP53", "MYC", "", "NaN", "1", "0", "yes", "train", "test", "TRAIN", "-", "\"", "a,b"]),
                  st.text(string.printable, max_size=6))
csv_text = st.builds(
    lambda header, rows: "\n".join([",".join(header)] + [",".join(r) for r in rows]),
    st.one_of(st.just(list(COLUMNS)), st.permutations(list(COLUMNS)), st.lists(st.sampled_from(list(COLUMNS) + ["x"]), max_size=5)),
    st.lists(st.lists(cells, min_size=0, max_size=5), max_size=6),
)


@FUZZ
@given(body=st.one_of(csv_text.map(str.encode), st.binary(max_size=300),
                      csv_text.map(lambda t: gzip.compress(t.encode())), st.binary(max_size=40).map(lambda b: b"\x1f\x8b" + b)),
       name=st.sampled_from(["k562-de.csv", "t.csv.gz", "t.csv.bz2"]))
def test_perturbqa_csvs_raise_only_data_integrity_error(tmp_path_factory, body, name):
    p = tmp_path_factory.mktemp("pqa") / name
    p.write_bytes(body)
    try:
        df = read_csv_checked(p)
    except DataIntegrityError as e:
        assert str(p) in str(e) or repr(str(p)) in str(e)
        return
    # accepted tables are clean
    assert list(df.columns) == list(COLUMNS) and len(df)
    assert set(df["label"].unique()) <= {0, 1} and set(df["split"].unique()) <= {"train", "test"}
    assert not df.isna().any().any()


# ------------------------------------------------------------------ gene files
def _tsv(header, rows):
    return "\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]) + "\n"


gene_cells = st.one_of(st.sampled_from(["9606", "10090", "-", "", "1", "7157", "abc", "1.5", "GO:0005634", "Process",
                                        "NOT", "ND", "TP53", "Ensembl:ENSG1|HGNC:1", "a|b"]), st.text(max_size=5))


@FUZZ
@given(kind=st.sampled_from(["gene_info", "gene2go"]),
       rows=st.lists(st.lists(gene_cells, min_size=0, max_size=11), max_size=5),
       drop=st.integers(0, 10), garbage=st.one_of(st.none(), st.binary(max_size=100)), gz=st.booleans())
def test_gene_tables_raise_only_value_error(tmp_path_factory, kind, rows, drop, garbage, gz):
    cols = list(src.GENE_INFO_COLUMNS if kind == "gene_info" else src.GENE2GO_COLUMNS)
    if drop < len(cols) and drop % 3 == 0:
        cols.pop(drop)
    body = garbage if garbage is not None else _tsv(cols, rows).encode()
    p = tmp_path_factory.mktemp("genes") / f"{kind}{'.gz' if gz else ''}"
    p.write_bytes(gzip.compress(body) if gz and garbage is None else body)
    reader = src.read_gene_info if kind == "gene_info" else src.read_gene2go
    try:
        df = reader(p)
    except ValueError as e:
        assert str(p) in str(e)
        return
    assert len(df) and df["gene_id"].dtype == np.int64


obo_lines = st.one_of(st.sampled_from([
    "format-version: 1.2", "[Term]", "[Typedef]", "id: GO:0000001", "name: x", "namespace: biological_process",
    "def: \"d\" []", "alt_id: GO:0000002", "is_a: GO:0000003 ! y", "is_obsolete: true", "relationship: part_of GO:1",
    "id:", ": :", "",
]), st.text(max_size=20))


@FUZZ
@given(lines=st.lists(obo_lines, max_size=12),
       garbage=st.one_of(st.none(), st.binary(max_size=80), st.binary(max_size=40).map(lambda b: b"\x1f\x8b" + b)),
       name=st.sampled_from(["go.obo", "go.obo.gz"]))
def test_obo_files_raise_only_value_error(tmp_path_factory, lines, garbage, name):
    p = tmp_path_factory.mktemp("obo") / name
    p.write_bytes(garbage if garbage is not None else "\n".join(lines).encode())
    try:
        df = src.read_obo(p)
    except ValueError as e:
        assert str(p) in str(e)
        return
    assert len(df) and df["go_id"].notna().all()


# ------------------------------------------------------------------ h5ad files
@pytest.fixture(scope="module")
def good_h5ad(tmp_path_factory) -> Path:
    import anndata

    rng = np.random.default_rng(0)
    a = anndata.AnnData(rng.poisson(1.0, (12, 6)).astype(np.float32))
    a.var_names = ["TP53", "MYC", "GATA1", "KLF1", "TAL1", "LMO2"]
    p = tmp_path_factory.mktemp("h5") / "ok.h5ad"
    a.write_h5ad(p)
    return p


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(cut=st.floats(0.0, 0.999), flip=st.one_of(st.none(), st.integers(0, 10**9)),
       garbage=st.one_of(st.none(), st.binary(max_size=200)))
def test_h5ad_files_raise_only_value_error(tmp_path_factory, good_h5ad, cut, flip, garbage):
    from softverify.bio.cell_embeddings import read_h5ad
    from softverify.bio.coexpression import matrix_from_h5ad

    if garbage is not None:
        body = garbage
    else:
        good = good_h5ad.read_bytes()
        body = bytearray(good[: max(1, int(len(good) * cut))])  # truncated
        if flip is not None:
            body[flip % len(body)] ^= 0xFF
        body = bytes(body)
    p = tmp_path_factory.mktemp("h5") / "x.h5ad"
    p.write_bytes(body)
    for read in (read_h5ad, lambda q: matrix_from_h5ad(q, min_cells=1)):
        try:
            read(p)
        except ValueError as e:
            assert str(p) in str(e)


def test_good_h5ad_still_reads(tmp_path, good_h5ad):
    from softverify.bio.cell_embeddings import read_h5ad

    assert read_h5ad(good_h5ad).shape == (12, 6)


# ------------------------------------------------------------------ chat request bodies
chat_bodies = st.one_of(
    st.binary(max_size=200),
    st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(
        st.sampled_from(["model", "messages", "role", "content", "max_tokens", "temperature", "top_p", "n", "stream",
                         "stop", "seed", "bogus", "stream_options", "include_usage"]), c, max_size=5),
        max_leaves=10).map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.builds(lambda n, c: json.dumps({"model": "tiny", "messages": [{"role": "user", "content": c}] * n}).encode(),
              st.integers(0, 80), st.text(max_size=50)),
)


@FUZZ
@given(body=chat_bodies)
def test_chat_bodies_raise_only_api_errors(body):
    from softverify.platform.serve.config import LimitsConfig
    from softverify.platform.serve.guards import check_chat, parse_body
    from softverify.platform.serve.schema import ApiError, ChatCompletionRequest

    limits = LimitsConfig(max_messages=64, max_body_bytes=2048)
    try:
        req = parse_body(body, ChatCompletionRequest, limits)
        check_chat(req, limits, "tiny")
    except ApiError as e:
        assert 400 <= e.status < 500 and e.message and e.body()["error"]["message"] == e.message
