"""``softverify data|genes|embed|worldmodel``: the biology sub-commands.

Each handler is a thin shell over a library function; user mistakes surface as
ValueError / FileNotFoundError / ConfigError, which :func:`softverify.cli.main` prints as
one line with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ----------------------------------------------------------------------------- data


def _data_fetch(args) -> int:
    from softverify.bio import perturbqa

    if args.dataset != "perturbqa":
        raise ValueError(f"unknown dataset {args.dataset!r}; expected 'perturbqa'")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    for k in kinds:
        perturbqa.check_kind(k)
    cells = perturbqa.parse_cell_lines(args.cell_lines)
    if args.sha256 and len(cells) * len(kinds) != 1:
        raise ValueError(f"--sha256 pins one table: give one --cell-lines and one --kinds (got {cells} x {list(kinds)})")
    src_dir = perturbqa.mirror_folder(args.mirror)
    for cell in cells:
        for kind in kinds:
            name = perturbqa.file_name(cell, kind)
            cached = (perturbqa.cache_folder(None) / name).is_file() and not args.force
            source = ("already in the cache" if cached else str(src_dir / name) if src_dir is not None
                      else perturbqa.upstream_url(cell, kind))
            p = perturbqa.fetch_file(cell, kind, mirror=args.mirror, force=args.force, sha256=args.sha256)
            note = "accepted knowingly (--sha256)" if args.sha256 else "matches the pin"
            print(f"{name}: {p}\n  from   {source}\n  sha256 {perturbqa.sha256_of(p)} ({note})")
    return 0


def _data_questions(args) -> int:
    from softverify.bio.questions import load_questions, save_questions
    from softverify.config import DataConfig

    cfg = DataConfig(
        cell_lines=args.cell_lines.split(","), mirror=args.mirror, balance=not args.no_balance,
        negated_fraction=args.negated_fraction, max_prompts=None, seed=args.seed,
        holdout_cell_line=args.holdout_cell_line,
    )
    ds = load_questions(cfg, args.split, limit=args.limit)
    if args.out:
        print(f"{len(ds)} questions -> {save_questions(ds, args.out)}")
    else:
        for row in ds.select(range(min(5, len(ds)))):
            print(f"[{row['label']}] {row['question']}")
        print(f"... {len(ds)} questions (use --out FILE.parquet to save)")
    return 0


# ----------------------------------------------------------------------------- genes


def _genes_build(args) -> int:
    from softverify.bio.genes import GeneKB, default_kb_dir

    kb = GeneKB.build(args.gene_info, args.gene2go, args.obo, args.summaries)
    out = kb.save(args.out or default_kb_dir())
    print(f"gene knowledge base: {len(kb.genes)} genes, {len(kb.terms)} GO terms, "
          f"{len(kb.annotations)} annotations -> {out}")
    return 0


def _genes_show(args) -> int:
    from softverify.bio.genes import GeneKB

    kb = GeneKB.load(args.kb)
    rec = kb.gene(args.symbol)
    if rec is None:
        raise ValueError(f"gene {args.symbol!r} is not in the knowledge base (not a symbol, alias or Ensembl id)")
    print(kb.describe(args.symbol))
    for t in kb.go_terms(args.symbol)[: args.max_terms]:
        print(f"  {t.aspect} {t.go_id} {t.name} [{t.evidence}]")
    return 0


def _genes_coverage(args) -> int:
    from softverify.bio import perturbqa
    from softverify.bio.genes import GeneKB

    kb = GeneKB.load(args.kb)
    df = perturbqa.load_tables(args.cell_lines, "de", mirror=args.mirror)
    _print_json(kb.coverage(sorted(set(df["pert"]) | set(df["gene"]))))
    return 0


# ----------------------------------------------------------------------------- embed


def _embed_genes(args) -> int:
    import torch

    from softverify.bio import embeddings, perturbqa
    from softverify.bio.genes import GeneKB

    torch.set_num_threads(args.threads)  # the sentence encoder

    df = perturbqa.load_tables(args.cell_lines, "de", mirror=args.mirror)
    symbols = sorted(set(df["pert"]) | set(df["gene"]))
    kw = {}
    kb = None if args.kind == "onehot" else GeneKB.load(args.kb)
    if args.kind == "genept":
        if args.openai_model:
            kw["encode"] = embeddings.openai_encoder(args.openai_model, base_url=args.openai_base_url)
            kw["encoder_name"] = args.openai_model
        else:
            kw["encode"] = embeddings.sentence_encoder(args.encoder)
            kw["encoder_name"] = args.encoder or embeddings.DEFAULT_ENCODER
    elif args.kind == "go":
        kw["dim"] = args.dim
    emb = embeddings.build_embedding(args.kind, symbols, kb=kb, **kw)
    print(f"{args.kind} embedding: {len(emb.symbols)}/{len(symbols)} genes, dim {emb.dim} -> {emb.save(args.out)}")
    return 0


# ----------------------------------------------------------------------------- worldmodel


def _wm_fit(args) -> int:
    import torch

    from softverify.bio import perturbqa
    from softverify.bio.embeddings import GeneEmbedding
    from softverify.bio.worldmodel import FitConfig, WorldModel

    torch.set_num_threads(args.threads)
    if args.model == "mlp" and not args.embedding:
        raise ValueError("worldmodel fit --model mlp needs --embedding (a `softverify embed genes` directory)")
    emb = GeneEmbedding.load(args.embedding) if args.embedding else None
    cells = perturbqa.parse_cell_lines(args.cell_lines)
    train = perturbqa.load_tables(cells, "de", mirror=args.mirror)
    if args.train_split != "all":
        train = train[train["split"] == args.train_split]
    log = (lambda m: print(m, file=sys.stderr)) if not args.quiet else (lambda m: None)
    if args.model == "gbdt":
        from softverify.bio.gbdt_worldmodel import GBDTConfig, GBDTWorldModel

        wm = GBDTWorldModel.fit(train, emb, GBDTConfig(seed=args.seed, threads=args.threads, max_rows=args.max_rows,
                                                       features=args.features),
                                cell_lines=cells, log=log)
    else:
        cfg = FitConfig(max_epochs=args.max_epochs, patience=args.patience, seed=args.seed,
                        threads=args.threads, max_rows=args.max_rows)
        wm = WorldModel.fit(train, emb, cfg, cell_lines=cells, log=log)
    report = {"val": wm.meta["val"], "threshold": wm.threshold}
    if args.eval_cell_line:
        ev = perturbqa.load_table(args.eval_cell_line, "de", mirror=args.mirror)
        ev = ev[ev["split"] == args.eval_split] if args.eval_split != "all" else ev
        report["eval"] = {"cell_line": args.eval_cell_line, "split": args.eval_split, **wm.evaluate(ev),
                          **per_gene_beside_lookups(wm, ev, args.mirror)}
        wm.meta["eval"] = report["eval"]
        print(f"{args.eval_cell_line} {args.eval_split}: {coverage_line(report['eval'])}", file=sys.stderr)
        print(per_gene_line(report["eval"]), file=sys.stderr)
    saved = wm.save(args.out)
    report["saved"] = str(saved)
    _print_json(report)
    print(f"world model saved to {saved} (train against it with --set 'verifiers=[{{kind: world_model, params: "
          f"{{model_dir: {saved}}}}}]' (threshold median and steps stratified by its decisions, the defaults); "
          f"score with it: "
          f"softverify verify --verifier 'world_model model_dir={saved}')", file=sys.stderr)
    return 0


def _wm_eval(args) -> int:
    from softverify.bio import perturbqa
    from softverify.bio.worldmodel import WorldModel

    import torch

    torch.set_num_threads(args.threads)
    wm = WorldModel.load(args.model)
    if args.split == "val":  # the validation perturbations training's data.val_fraction holds out
        from softverify.bio.questions import select_split
        from softverify.config import DataConfig

        ev = select_split(DataConfig(cell_lines=[args.cell_line], mirror=args.mirror), "val")
        exclude = set(ev["pert"])
    else:
        ev = perturbqa.load_table(args.cell_line, "de", mirror=args.mirror)
        ev = ev[ev["split"] == args.split] if args.split != "all" else ev
        exclude = None
    metrics = wm.evaluate(ev)
    metrics.update(per_gene_beside_lookups(wm, ev, args.mirror, exclude))
    _print_json({"cell_line": args.cell_line, "split": args.split, **metrics})
    print(coverage_line(metrics), file=sys.stderr)
    print(per_gene_line(metrics), file=sys.stderr)
    return 0


def per_gene_beside_lookups(wm, ev, mirror, exclude_perts: set[str] | None = None) -> dict:
    """PerturbQA's ``auc_per_gene`` of a world model on ``ev`` (interval over genes), with
    the lookups scored on the same rows (softverify.bio.lookups)."""
    from softverify.bio.lookups import lookup_report, ranking_report

    p = wm.predict_proba(ev["pert"].tolist(), ev["gene"].tolist())
    y = ev["label"].to_numpy()
    return {"per_gene": ranking_report(ev["gene"].to_numpy(), y, p),
            "lookups": lookup_report(ev, y, mirror=mirror, exclude_perts=exclude_perts)}


def per_gene_line(m: dict) -> str:
    g = m["per_gene"]
    out = (f"auc_per_gene {g['auc_per_gene']:.3f} [{g['auc_per_gene_lo']:.3f}, {g['auc_per_gene_hi']:.3f}] over "
           f"{g['auc_per_gene_genes']} genes (pooled AUROC {g['auroc']:.3f}); lookups on the same rows:")
    for name, lk in m["lookups"].items():
        out += f"\n  {name}: auc_per_gene {lk['auc_per_gene']:.3f}, pooled {lk['auroc']:.3f}"
    return out


def _wm_table(args) -> int:
    """``softverify worldmodel table``: a teacher table over a question pool's pairs."""
    from softverify.bio.lookups import lookup_scores
    from softverify.bio.questions import select_split
    from softverify.bio.teacher_table import load_teacher, make_table, save_table
    from softverify.config import DataConfig

    import torch

    torch.set_num_threads(args.threads)
    if bool(args.model) == bool(args.lookup):
        raise ValueError("worldmodel table needs exactly one teacher: --model DIR or --lookup NAME")
    cfg = DataConfig(cell_lines=args.cell_lines.split(","), mirror=args.mirror, eval_genes=args.eval_genes)
    if args.genes_of and not args.eval_genes:
        raise ValueError(f"worldmodel table --genes-of {args.genes_of} needs --eval-genes N (which of its genes)")
    if args.genes_of:  # inductive: other knockdowns of the genes the eval draws from --genes-of
        from softverify.data import load_eval_prompts

        eval_rows = load_eval_prompts(cfg, args.genes_of).to_pandas()
        pool = select_split(cfg, args.split)
        pool = pool[pool["gene"].isin(set(eval_rows["gene"]))]
        shared = set(pool["pert"]) & set(select_split(cfg, args.genes_of)["pert"])
        if shared:
            raise ValueError(f"--split {args.split} and --genes-of {args.genes_of} share {len(shared)} knockdowns "
                             f"(e.g. {sorted(shared)[:3]}): the inductive pool must hold none of the evaluated ones")
    elif args.eval_genes:  # the periodic eval's whole target genes of the split (labels not read for the table)
        from softverify.data import load_eval_prompts

        pool = load_eval_prompts(cfg, args.split).to_pandas()
    else:
        pool = select_split(cfg, args.split)
    pool = pool[["pert", "gene", "cell_line"]].drop_duplicates(["pert", "gene"])
    if args.model:
        p = load_teacher({"model_dir": args.model}).predict_proba(pool["pert"].tolist(), pool["gene"].tolist())
    else:
        p = lookup_scores(pool, mirror=args.mirror)[args.lookup]
    df = make_table(pool, p, center=args.center, permute_seed=args.permute_seed)
    out = save_table(df, args.out)
    teacher = args.model or f"lookup {args.lookup}"
    genes = f" (target genes of the {args.genes_of} eval)" if args.genes_of else ""
    print(f"teacher table {out}: {len(df)} pairs of split {args.split!r}{genes} ({args.cell_lines}) scored by {teacher}"
          f"{f', centred per target gene ({args.center})' if args.center else ''}"
          f"{f', permuted (seed {args.permute_seed})' if args.permute_seed is not None else ''}; "
          f"use it with --set 'verifiers.0.params.p_table={out}'", file=sys.stderr)
    return 0


def coverage_line(m: dict) -> str:
    """The covered-rows and all-rows figures side by side, so a model that skips the rows it
    has no embedding for cannot pass for a better one (its top-level numbers are covered-only)."""
    a = m["all_rows"]
    return (f"covered rows ({m['coverage']:.1%} of {m['n']}): AUROC {m['auroc']:.3f}, MCC {m['mcc']:.3f}; "
            f"all rows (uncovered answered {a['uncovered_as']}): AUROC {a['auroc']:.3f}, MCC {a['mcc']:.3f}")


# ----------------------------------------------------------------------------- wiring


def perturbqa_defaults() -> tuple[str, ...]:
    from softverify.bio.perturbqa import DEFAULT_CELL_LINES

    return DEFAULT_CELL_LINES


_CELLS_HELP = "comma-separated PerturbQA cell lines (k562, rpe1, hepg2, jurkat)"
_MIRROR_HELP = "local directory with the PerturbQA CSVs (default $SOFTVERIFY_DATA_MIRROR, else the cache/download)"


def register(subparsers: argparse._SubParsersAction) -> None:
    """The bio commands: ``data``, ``genes``, ``embed``, ``worldmodel``."""
    _register_data(subparsers)
    _register_genes(subparsers)
    _register_embed(subparsers)
    _register_worldmodel(subparsers)


def _register_data(subparsers: argparse._SubParsersAction) -> None:
    cells_help, mirror_help = _CELLS_HELP, _MIRROR_HELP
    data = subparsers.add_parser("data", help="fetch PerturbQA tables; build question datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = dsub.add_parser("fetch", help="download (or copy from a mirror) and verify dataset files into the cache")
    f.add_argument("dataset", help="dataset name: perturbqa")
    f.add_argument("--cell-lines", default=",".join(perturbqa_defaults()),
                   help=cells_help + "; default: k562, rpe1, hepg2 (jurkat, pinned too, when named)")
    f.add_argument("--sha256", help="accept this digest for the one table fetched (a trusted copy whose "
                   "checksum differs from the pin)")
    f.add_argument("--kinds", default="de,dir", help="comma-separated tables to fetch: de (differential expression), dir (its direction); default: de,dir")
    f.add_argument("--from", dest="mirror", default=None, help=mirror_help)
    f.add_argument("--force", action="store_true", help="re-fetch files already in the cache")
    f.set_defaults(func=_data_fetch)
    q = dsub.add_parser("questions", help="rbio1 questions for a split; print a few or save parquet")
    q.add_argument("--cell-lines", default="k562", help=cells_help + "; default %(default)s")
    q.add_argument("--split", default="train",
                   help="train, test, loco_train, loco_test, gene_train or gene_test (default %(default)s)")
    q.add_argument("--limit", type=int, default=None, help="number of questions (default: all)")
    q.add_argument("--negated-fraction", type=float, default=0.0,
                   help="share of questions asked in a negated form (\"...leave the expression of B unchanged?\"; the "
                        "label flips), default 0")
    q.add_argument("--no-balance", action="store_true", help="keep the natural ~13%% positive rate")
    q.add_argument("--holdout-cell-line", default=None,
                   help="for the loco_* splits: the cell line left out of training (default: the last of --cell-lines)")
    q.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    q.add_argument("--from", dest="mirror", default=None, help=mirror_help)
    q.add_argument("--out", default=None, help="output .parquet (default: print the first five questions)")
    q.set_defaults(func=_data_questions)


def _gene_source_arguments(p: argparse.ArgumentParser, kb_help: str) -> None:
    """Where a command over the genes of PerturbQA lines reads them: the knowledge base, the
    lines, the data mirror."""
    p.add_argument("--kb", default=None, help=kb_help)
    p.add_argument("--cell-lines", default="k562,rpe1,hepg2", help=_CELLS_HELP + "; default %(default)s")
    p.add_argument("--from", dest="mirror", default=None, help=_MIRROR_HELP)


def _register_genes(subparsers: argparse._SubParsersAction) -> None:
    genes = subparsers.add_parser("genes", help="gene knowledge base (NCBI gene_info + gene2go + GO)")
    gsub = genes.add_subparsers(dest="genes_command", metavar="ACTION", required=True)
    b = gsub.add_parser("build", help="build and cache the knowledge base as parquet")
    b.add_argument("--gene-info", required=True, help="NCBI Homo_sapiens.gene_info(.gz)")
    b.add_argument("--gene2go", required=True, help="NCBI gene2go(.gz) (all species or human only)")
    b.add_argument("--obo", required=True, help="GO go-basic.obo(.gz)")
    b.add_argument("--summaries", default=None, help="optional GenePT-style JSON {symbol: summary}")
    b.add_argument("--out", default=None, help="output directory (default <cache>/genes)")
    b.set_defaults(func=_genes_build)
    s = gsub.add_parser("show", help="print a gene's description and GO terms")
    s.add_argument("symbol", help="gene symbol, alias or Ensembl id, e.g. TP53")
    s.add_argument("--kb", default=None, help="knowledge base directory (default <cache>/genes)")
    s.add_argument("--max-terms", type=int, default=20, help="GO terms listed (default 20)")
    s.set_defaults(func=_genes_show)
    c = gsub.add_parser("coverage", help="fraction of PerturbQA genes resolved / with GO terms")
    _gene_source_arguments(c, "knowledge base directory (default <cache>/genes)")
    c.set_defaults(func=_genes_coverage)


def _register_embed(subparsers: argparse._SubParsersAction) -> None:
    from softverify.configbase import add_threads_argument

    emb = subparsers.add_parser("embed", help="gene embeddings (GenePT text, GO factorisation, one-hot)")
    esub = emb.add_subparsers(dest="embed_command", metavar="ACTION", required=True)
    e = esub.add_parser("genes", help="embed every gene of the given PerturbQA cell lines")
    e.add_argument("--kind", choices=["genept", "go", "onehot"], required=True,
                   help="genept: sentence embedding of each gene's NCBI/UniProt text; go: SVD of the gene x GO-term "
                        "matrix; onehot: an identity per gene (no shared knowledge, a baseline)")
    _gene_source_arguments(e, "knowledge base directory (genept, go; default <cache>/genes)")
    e.add_argument("--encoder", default=None, help="local sentence-transformers dir (default bundled all-MiniLM-L6-v2)")
    e.add_argument("--openai-model", default=None, help="use an OpenAI-compatible /embeddings endpoint with this model")
    e.add_argument("--openai-base-url", default=None, help="base URL of that endpoint (default: the openai client's)")
    e.add_argument("--dim", type=int, default=128, help="go: factorisation dimension (default %(default)s)")
    e.add_argument("--out", required=True, help="output directory")
    add_threads_argument(e)
    e.set_defaults(func=_embed_genes)


def _register_worldmodel(subparsers: argparse._SubParsersAction) -> None:
    from softverify.bio.lookups import LOOKUPS
    from softverify.configbase import add_threads_argument

    cells_help, mirror_help = _CELLS_HELP, _MIRROR_HELP
    wm = subparsers.add_parser("worldmodel", help="train / evaluate DE world models (soft verifier brains)")
    wsub = wm.add_subparsers(dest="wm_command", metavar="ACTION", required=True)
    w = wsub.add_parser("fit", help="train a world model: an MLP on (pert, gene) embeddings, or a calibrated "
                        "LightGBM model on the training lines' gene statistics (+ embeddings)")
    w.add_argument("--model", default="mlp", choices=["mlp", "gbdt"],
                   help="'mlp': pair MLP on embeddings; 'gbdt': target/perturbation DE rates and counts (+ the "
                        "embedding when given), isotonic-calibrated, saved as LightGBM text (default %(default)s)")
    w.add_argument("--features", default="pooled", choices=["pooled", "cross_line"],
                   help="gbdt: 'pooled' (gene statistics over all training rows, out of fold by perturbation) or "
                        "'cross_line' (each training line's rows described by the other lines: rates, the pair's "
                        "own label, and neighbourhood scores through --embedding; what a held-out line meets; "
                        "the ranking teacher). Default %(default)s")
    w.add_argument("--embedding", help="directory from `softverify embed genes` (required for mlp and for gbdt "
                   "--features cross_line)")
    w.add_argument("--cell-lines", default="rpe1,hepg2", help="training " + cells_help + "; default %(default)s")
    w.add_argument("--train-split", default="all", choices=["all", "train", "test"],
                   help="PerturbQA split of the training lines used (default all: the lines are held out anyway)")
    w.add_argument("--eval-cell-line", default=None, help="report metrics on this cell line after training")
    w.add_argument("--eval-split", default="test", choices=["all", "train", "test"],
                   help="split of --eval-cell-line (default test)")
    w.add_argument("--from", dest="mirror", default=None, help=mirror_help)
    w.add_argument("--max-epochs", type=int, default=12, help="mlp: most training epochs (default 12)")
    w.add_argument("--patience", type=int, default=2,
                   help="mlp: stop after this many epochs without a better validation AUROC (default 2)")
    w.add_argument("--max-rows", type=int, default=None, help="subsample training rows (default: all)")
    add_threads_argument(w, what="torch / LightGBM threads")
    w.add_argument("--seed", type=int, default=0, help="seed for the split, initialisation and batches (default 0)")
    w.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    w.add_argument("--out", required=True, help="output model directory (the path is printed when saved)")
    w.set_defaults(func=_wm_fit)
    v = wsub.add_parser("eval", help="AUROC/AUPRC/MCC of a saved world model on a cell line (covered rows, and "
                        "all rows with the uncovered answered no)")
    v.add_argument("--model", required=True, help="world model directory (from `softverify worldmodel fit`)")
    v.add_argument("--cell-line", required=True, help="PerturbQA cell line to score (k562, rpe1, hepg2, jurkat)")
    v.add_argument("--split", default="test", choices=["all", "train", "val", "test"],
                   help="its split (default test; val: the validation perturbations, data.val_fraction of train)")
    v.add_argument("--from", dest="mirror", default=None, help=mirror_help)
    add_threads_argument(v)
    v.set_defaults(func=_wm_eval)
    t = wsub.add_parser("table", help="score a question pool's (pert, gene) pairs once with a teacher (a world model "
                        "or a lookup) into a parquet the world_model verifier reads with params.p_table")
    t.add_argument("--model", help="world model directory (from `softverify worldmodel fit`)")
    t.add_argument("--lookup", choices=list(LOOKUPS), help="a lookup as the teacher instead (a control)")
    t.add_argument("--cell-lines", default="k562", help="cell lines of the pool; default %(default)s")
    t.add_argument("--split", default="train", help="the pool: a question split (train, val, test, ...; default "
                   "%(default)s). Labels of the pool are never read for a --model table")
    t.add_argument("--eval-genes", type=int, default=None,
                   help="pool = the pairs of the N whole target genes the periodic eval draws from --split "
                   "(data.eval_genes=N): the transductive setting on exactly the evaluated questions")
    t.add_argument("--genes-of", default=None, metavar="SPLIT",
                   help="with --eval-genes N: pool = --split's pairs whose target gene is one of the N genes the "
                   "periodic eval draws from SPLIT (the inductive setting: the student is taught other knockdowns of "
                   "the evaluated genes; refused if the two splits share a knockdown)")
    t.add_argument("--center", choices=["gene", "gene_rank"], default=None,
                   help="gene: sigmoid(logit p - the target gene's median logit); gene_rank: p's percentile among its "
                   "target gene's rows. Both keep each gene's order of knockdowns and remove which genes are often DE")
    t.add_argument("--permute-seed", type=int, default=None,
                   help="shuffle p across the pool's pairs (the same rewards, unrelated to their pairs): the control")
    t.add_argument("--from", dest="mirror", default=None, help=mirror_help)
    add_threads_argument(t)
    t.add_argument("--out", required=True, help="output .parquet")
    t.set_defaults(func=_wm_table)


__all__ = ["register"]
