"""The `searchkit` command line: thin shells over the Python API.

Every command has a one-line Python equivalent (given in its help). Errors print one line on stderr and exit 1
(``--debug`` shows the traceback). Heavy libraries load only inside commands, so ``searchkit --help`` is instant.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import click

from searchkit import __version__
from searchkit.config import DEFAULT_DENSE_MODEL, BM25Config, DenseConfig, FusionConfig, ServeConfig, TokensConfig
from searchkit.serve import TOKEN_ENV
from searchkit.types import SearchkitError

logger = logging.getLogger("searchkit")


def _progress_default() -> bool:
    return sys.stderr.isatty()


def _echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(version=__version__, prog_name="searchkit")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int, progress: bool | None) -> None:
    """searchkit: BM25 + dense retrieval, fusion, reranking and IR evaluation."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Our own bars cover the long work; transformers' per-load "Loading weights" bars are noise in a CLI.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    ctx.obj = {"debug": debug, "progress": _progress_default() if progress is None else progress}


# ---------------------------------------------------------------------- index
@cli.group()
def index() -> None:
    """Build, inspect and verify index folders."""


def _bm25_config(method: str, k1: float, b: float, stemmer: str, stopwords: str) -> Any:
    from searchkit.config import BM25Config

    return BM25Config(
        method=method,
        k1=k1,
        b=b,
        stemmer=None if stemmer.lower() == "none" else stemmer,
        stopwords=None if stopwords.lower() == "none" else stopwords,
    )


def _with_options(func: Any, options: Sequence[Any]) -> Any:
    """``func`` decorated by each click option of ``options``, listed in the order --help shows them."""
    for option in reversed(options):
        func = option(func)
    return func


def _tokens_options(func: Any) -> Any:
    """``--tokens [MODEL]`` and ``--tokens-max-length`` (index build and index add)."""
    options = [
        click.option(
            "--tokens",
            "tokens_model",
            is_flag=False,
            flag_value=DEFAULT_DENSE_MODEL,
            default=None,
            metavar="[MODEL]",
            help=f"Also store every document's token ids, from MODEL's tokenizer (default: {DEFAULT_DENSE_MODEL}); "
            "a reranker or dense encoder with the same tokenizer then never tokenizes documents.",
        ),
        click.option(
            "--tokens-max-length",
            type=int,
            default=None,
            help=f"Tokens stored per document (default {TokensConfig.max_length}).",
        ),
    ]
    return _with_options(func, options)


def _tokens_config(model: str | None, max_length: int | None) -> Any:
    """The TokensConfig of ``--tokens [MODEL]`` and ``--tokens-max-length`` (None without --tokens)."""
    from searchkit.types import ConfigError

    if model is None:
        if max_length is not None:
            raise ConfigError("--tokens-max-length needs --tokens")
        return None
    return TokensConfig(model=model) if max_length is None else TokensConfig(model=model, max_length=max_length)


def _metadata_options(func: Any) -> Any:
    """``--metadata FIELD`` and ``--filterable FIELD[:TYPE]`` (index build)."""
    options = [
        click.option(
            "--metadata",
            "metadata_fields",
            multiple=True,
            metavar="FIELD",
            help="Keep this corpus column in each document's metadata (repeatable; BEIR's metadata object is kept "
            "anyway).",
        ),
        click.option(
            "--filterable",
            multiple=True,
            metavar="FIELD[:TYPE]",
            help="Store this metadata field column-wise for --filter (repeatable); TYPE keyword (default) or number.",
        ),
    ]
    return _with_options(func, options)


def _ray_options(func: Any) -> Any:
    """``--ray [ADDRESS]`` and ``--ray-actors N`` (index build / add, run): see searchkit.distributed."""
    options = [
        click.option(
            "--ray",
            "ray_address",
            is_flag=False,
            flag_value="local",
            default=None,
            metavar="[ADDRESS]",
            help="Spread the work over a Ray cluster (extra searchkit[ray]): alone, a local instance or the one "
            "RAY_ADDRESS names; 'auto' joins this machine's cluster, ray://HOST:10001 a remote one.",
        ),
        click.option("--ray-actors", type=int, default=None, help="Ray actors (default: one per GPU or CPU)."),
    ]
    return _with_options(func, options)


def _ray_config(address: str | None, actors: int | None) -> Any:
    """RayConfig(address=..., actors=...) when --ray was given, else None."""
    from searchkit.config import RayConfig

    if address is None:
        if actors is not None:
            raise click.UsageError("--ray-actors needs --ray")
        return None
    return RayConfig(address=None if address == "local" else address, actors=actors)


@index.command("build")
@click.argument("recipe", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--corpus", help="BEIR folder, .jsonl/.tsv corpus file, or irds:<ir-datasets id>.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Index folder to create.")
@click.option("--dense", "dense_model", help="Also build a dense component with this model (e.g. all-MiniLM-L6-v2).")
@click.option("--no-bm25", is_flag=True, help="Skip the BM25 component (dense only).")
@_tokens_options
@click.option(
    "--bm25-method", default=BM25Config.method, show_default=True, help="lucene, robertson, atire, bm25l, bm25+."
)
@click.option("--k1", default=BM25Config.k1, show_default=True, type=float)
@click.option("--b", "b", default=BM25Config.b, show_default=True, type=float)
@click.option("--stemmer", default="english", show_default=True, help="PyStemmer language, or 'none'.")
@click.option("--stopwords", default="en", show_default=True, help="bm25s stopword list name, or 'none'.")
@click.option(
    "--faiss", "faiss_factory", default=DenseConfig.faiss_factory, show_default=True, help="FAISS index factory string."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda for encoding and FAISS.")
@click.option("--id-field", default="_id", show_default=True)
@click.option("--title-field", default="title", show_default=True)
@click.option("--text-field", default="text", show_default=True)
@_metadata_options
@_ray_options
@click.option("--overwrite", is_flag=True, help="Replace an existing index folder.")
@click.option("--force", is_flag=True, help="Build even when the plan (logged first) exceeds the free disk.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest summary as JSON.")
@click.pass_context
def index_build(
    ctx: click.Context,
    recipe: Path | None,
    corpus: str | None,
    output: Path | None,
    dense_model: str | None,
    no_bm25: bool,
    tokens_model: str | None,
    tokens_max_length: int | None,
    bm25_method: str,
    k1: float,
    b: float,
    stemmer: str,
    stopwords: str,
    faiss_factory: str,
    device: str,
    id_field: str,
    title_field: str,
    text_field: str,
    metadata_fields: tuple[str, ...],
    filterable: tuple[str, ...],
    ray_address: str | None,
    ray_actors: int | None,
    overwrite: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Build an index from RECIPE.toml or from --corpus/-o.

    Python: Index.build(corpus, output, bm25=BM25Config(...), dense=DenseConfig(...), tokens=TokensConfig(...),
    filters=FilterConfig(["year:number", "lang"]), metadata_fields=[...])
    """
    from searchkit.config import DenseConfig, FilterConfig, load_index_recipe
    from searchkit.index import Index
    from searchkit.types import ConfigError

    if recipe is not None:
        if corpus or output:
            raise ConfigError("give either RECIPE.toml or --corpus/-o, not both")
        loaded = load_index_recipe(recipe)
        spec: dict[str, Any] = {
            "corpus": loaded.corpus,
            "output": loaded.output,
            "bm25": loaded.bm25,
            "dense": loaded.dense,
            "tokens": loaded.tokens,
            "filters": loaded.filters,
            "fields": loaded.fields,
        }
    else:
        if not corpus or not output:
            raise ConfigError("index build needs RECIPE.toml, or both --corpus and -o/--output")
        spec = {
            "corpus": corpus,
            "output": output,
            "bm25": None if no_bm25 else _bm25_config(bm25_method, k1, b, stemmer, stopwords),
            "dense": DenseConfig(model=dense_model, faiss_factory=faiss_factory, device=device)
            if dense_model
            else None,
            "tokens": _tokens_config(tokens_model, tokens_max_length),
            "filters": FilterConfig(list(filterable)) if filterable else None,
            "fields": {
                "id_field": id_field,
                "title_field": title_field,
                "text_field": text_field,
                "metadata_fields": list(metadata_fields),
            },
        }
    built = Index.build(
        spec["corpus"],
        spec["output"],
        bm25=spec["bm25"],
        dense=spec["dense"],
        tokens=spec["tokens"],
        filters=spec["filters"],
        overwrite=overwrite,
        show_progress=ctx.obj["progress"],
        ray=_ray_config(ray_address, ray_actors),
        force=force,
        **spec["fields"],
    )
    summary = built.info()
    if as_json:
        _echo_json(summary)
    else:
        click.echo(
            f"built {built.path}: {built.num_docs} documents, components: {', '.join(summary['components'])}, "
            f"{summary['size_bytes'] / 1e6:.1f} MB"
        )


@index.command("plan")
@click.argument("recipe", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--corpus", help="BEIR folder, .jsonl/.tsv corpus file, or irds:<ir-datasets id>.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Where the index would go.")
@click.option("--dense", "dense_model", help="Plan a dense component with this model (e.g. all-MiniLM-L6-v2).")
@click.option("--no-bm25", is_flag=True, help="Plan without the BM25 component.")
@_tokens_options
@click.option("--faiss", "faiss_factory", default=None, help=f"FAISS factory (default {DenseConfig.faiss_factory}).")
@click.option("--device", default=None, help="auto, cpu or cuda (default: the recipe's, else auto).")
@click.option("--sample", type=int, default=None, help="Read only the first N documents; count the rest by lines.")
@click.option("--scale-to", type=int, default=None, help="Plan for N documents, extrapolated from those read.")
@click.option("--no-measure", is_flag=True, help="Do not time the encoder or measure every FAISS factory.")
@click.option("--id-field", default="_id", show_default=True)
@click.option("--title-field", default="title", show_default=True)
@click.option("--text-field", default="text", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def index_plan(
    recipe: Path | None,
    corpus: str | None,
    output: Path | None,
    dense_model: str | None,
    no_bm25: bool,
    tokens_model: str | None,
    tokens_max_length: int | None,
    faiss_factory: str | None,
    device: str | None,
    sample: int | None,
    scale_to: int | None,
    no_measure: bool,
    id_field: str,
    title_field: str,
    text_field: str,
    as_json: bool,
) -> None:
    """Estimate a build before running it: disk per component, peak RAM, VRAM, encoding time, FAISS options.

    Python: plan_build(corpus, bm25=..., dense=DenseConfig(...), sample=N, scale_to=N)  (searchkit.plan)
    """
    import dataclasses

    from searchkit.config import BM25Config, load_index_recipe
    from searchkit.plan import free_disk, plan_build
    from searchkit.types import ConfigError

    overrides: dict[str, Any] = {"faiss_factory": faiss_factory, "device": device}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if recipe is not None:
        if corpus:
            raise ConfigError("give either RECIPE.toml or --corpus, not both")
        loaded = load_index_recipe(recipe)
        dense = dataclasses.replace(loaded.dense, **overrides) if loaded.dense is not None else None
        source, target = loaded.corpus, output or loaded.output
        components: dict[str, Any] = {"bm25": loaded.bm25, "dense": dense, "tokens": loaded.tokens}
        components["filters"] = loaded.filters
        fields = {"id_field": id_field, "title_field": title_field, "text_field": text_field, **loaded.fields}
    else:
        if not corpus:
            raise ConfigError("index plan needs RECIPE.toml or --corpus")
        if overrides and not dense_model:
            raise ConfigError("--faiss and --device need --dense MODEL")
        source, target = corpus, output or Path("index")
        components = {
            "bm25": None if no_bm25 else BM25Config(),
            "dense": DenseConfig(model=dense_model, **overrides) if dense_model else None,
            "tokens": _tokens_config(tokens_model, tokens_max_length),
        }
        fields = {"id_field": id_field, "title_field": title_field, "text_field": text_field}
    plan = plan_build(source, **components, **fields, sample=sample, scale_to=scale_to, measure=not no_measure)
    where, free = free_disk(target)
    if as_json:
        _echo_json({**plan.to_dict(), "output": str(target), "free_disk": free})
        return
    click.echo(plan.table(free_disk=free))
    if plan.disk_peak > free:
        click.echo(f"warning: {where} has too little free disk: `index build` would refuse it without --force")


@index.command("add")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dense", "dense_model", help="Add a dense component with this model.")
@click.option("--faiss", "faiss_factory", default=DenseConfig.faiss_factory, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--bm25", "add_bm25", is_flag=True, help="Add a BM25 component (default settings).")
@_tokens_options
@_ray_options
@click.option("--overwrite", is_flag=True, help="Replace the component if the index has one.")
@click.pass_context
def index_add(
    ctx: click.Context,
    directory: Path,
    dense_model: str | None,
    faiss_factory: str,
    device: str,
    add_bm25: bool,
    tokens_model: str | None,
    tokens_max_length: int | None,
    ray_address: str | None,
    ray_actors: int | None,
    overwrite: bool,
) -> None:
    """Add a component to an existing index without rebuilding the others.

    Python: Index.open(directory).add(dense=DenseConfig(model=...), tokens=TokensConfig(model=...))
    """
    from searchkit.config import BM25Config, DenseConfig
    from searchkit.index import Index

    dense = DenseConfig(model=dense_model, faiss_factory=faiss_factory, device=device) if dense_model else None
    updated = Index.open(directory).add(
        bm25=BM25Config() if add_bm25 else None,
        dense=dense,
        tokens=_tokens_config(tokens_model, tokens_max_length),
        overwrite=overwrite,
        show_progress=ctx.obj["progress"],
        ray=_ray_config(ray_address, ray_actors),
    )
    click.echo(f"{updated.path}: components now {', '.join(updated.manifest['components'])}")


@index.command("info")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def index_info(directory: Path, as_json: bool) -> None:
    """Show what an index holds and how it was built.  Python: Index.open(directory).info()"""
    from searchkit.index import Index

    summary = Index.open(directory).info()
    if as_json:
        _echo_json(summary)
        return
    click.echo(f"index      {summary['path']}")
    click.echo(f"documents  {summary['num_docs']}")
    tombstones = summary.get("num_rows", summary["num_docs"]) - summary["num_docs"]
    click.echo(f"generation {summary.get('generation', 0)}" + (f" ({tombstones} tombstones)" if tombstones else ""))
    click.echo(f"source     {summary['source'].get('path')}  sha256={summary['source'].get('sha256')}")
    click.echo(
        f"format     {summary['format']} v{summary['format_version']} (searchkit {summary['searchkit_version']})"
    )
    click.echo(f"created    {summary['created']}")
    click.echo(f"size       {summary['size_bytes'] / 1e6:.1f} MB")
    for name, entry in summary["components"].items():
        settings = ", ".join(f"{key}={value}" for key, value in entry["config"].items())
        click.echo(f"{name:<10} {settings}")


@index.command("verify")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def index_verify(directory: Path) -> None:
    """Check every checksum and invariant; exit 1 on any problem.  Python: Index.open(directory, verify=True)"""
    from searchkit.index import Index

    opened = Index.open(directory, verify=True)
    click.echo(f"{opened.path}: ok ({opened.num_docs} documents, {len(opened.manifest['files'])} files verified)")


@index.command("update")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--add", "add_corpus", help="Documents to add (BEIR folder, .jsonl/.tsv file): an existing id is replaced."
)
@click.option(
    "--delete", "delete_file", type=click.Path(dir_okay=False, path_type=Path), help="File of doc ids to delete."
)
@click.option(
    "--compact/--no-compact",
    default=None,
    help="Drop every tombstone now (default: when they pass UpdateConfig.compact_ratio of the rows).",
)
@click.option("--id-field", default=None, help="Id field of --add (default: the one the index was built with).")
@click.option("--title-field", default=None, help="Title field of --add (default: as built).")
@click.option("--text-field", default=None, help="Text field of --add (default: as built).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def index_update(
    ctx: click.Context,
    directory: Path,
    add_corpus: str | None,
    delete_file: Path | None,
    compact: bool | None,
    id_field: str | None,
    title_field: str | None,
    text_field: str | None,
    as_json: bool,
) -> None:
    """Add, replace and delete documents in one atomic step, without a rebuild.

    Python: Index.open(directory).update(add=read_corpus(corpus), delete=read_ids(ids_file))
    """
    import time

    from searchkit.formats import read_ids
    from searchkit.index import Index
    from searchkit.types import ConfigError
    from searchkit.update import check_deletable, read_update_corpus

    if add_corpus is None and delete_file is None:
        raise ConfigError("index update needs --add CORPUS and/or --delete IDS_FILE")
    started = time.perf_counter()
    opened = Index.open(directory)
    fields = {"id_field": id_field, "title_field": title_field, "text_field": text_field}
    added = read_update_corpus(opened, add_corpus, **fields) if add_corpus is not None else []
    deleted = read_ids(delete_file) if delete_file is not None else []
    check_deletable(opened, deleted, delete_file)
    updated = opened.update(add=added, delete=deleted, compact=compact, show_progress=ctx.obj["progress"])
    summary = {
        "path": str(updated.path),
        "generation": updated.generation,
        "num_docs": updated.num_docs,
        "tombstones": len(updated.deleted_rows),
        **updated.manifest.get("last_update", {}),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if updated is opened:
        summary["unchanged"] = True
    if as_json:
        _echo_json(summary)
        return
    click.echo(
        f"{updated.path}: generation {summary['generation']}, {summary['num_docs']} documents "
        f"({summary.get('added', 0)} added, {summary.get('replaced', 0)} replaced, {summary.get('deleted', 0)} deleted"
        f"{', compacted' if summary.get('compacted') else ''}; {summary['tombstones']} tombstones) "
        f"in {summary['seconds']:.2f} s"
    )


@index.command("compact")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def index_compact(directory: Path) -> None:
    """Rewrite the index without its tombstones (deleted or replaced documents).  Python: Index.open(dir).compact()"""
    from searchkit.index import Index

    opened = Index.open(directory)
    compacted = opened.compact()
    dropped = len(opened.deleted_rows)
    click.echo(
        f"{compacted.path}: generation {compacted.generation}, {compacted.num_docs} documents"
        + (f" ({dropped} tombstones dropped)" if dropped else " (nothing to compact)")
    )


@index.command("analyze")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("text")
@click.option("--json", "as_json", is_flag=True)
def index_analyze(directory: Path, text: str, as_json: bool) -> None:
    """Show the terms the index's BM25 analyzer makes of TEXT (what a query is matched on).

    Python: Index.open(directory).component("bm25").analyze(text)
    """
    from searchkit.index import Index

    retriever = Index.open(directory).component("bm25")
    terms = retriever.analyze(text)
    if as_json:
        _echo_json(terms)
        return
    click.echo(" ".join(terms) if terms else "(no terms: every word is a stopword or empty)")
    unknown = retriever.unknown_terms(text)
    if unknown:
        click.echo(f"not in the index (ignored at query time): {' '.join(unknown)}")


# ---------------------------------------------------------------------- search / run
def _searcher_options(func: Any) -> Any:
    options = [
        click.option("--mode", default="auto", show_default=True, help="auto, bm25, dense, hybrid or cascade."),
        click.option("--fusion", default=FusionConfig.method, show_default=True, help="Hybrid fusion: rrf or convex."),
        click.option("--depth", default=FusionConfig.depth, show_default=True, help="Candidates per first stage."),
        click.option("--alpha", default=FusionConfig.alpha, show_default=True, help="Dense weight for convex fusion."),
        click.option("--rrf-k", default=FusionConfig.rrf_k, show_default=True, help="RRF constant."),
        click.option("--device", default=None, help="Device for the dense model and the reranker: auto, cpu or cuda."),
        click.option(
            "--rerank",
            "rerank_model",
            default=None,
            metavar="MODEL",
            help="Rerank with this cross-encoder: a `searchkit train` output folder or a model name.",
        ),
        click.option(
            "--rerank-depth",
            type=int,
            default=None,
            help="First-stage hits the reranker re-scores (default: the depth its card's learned fusion was fitted "
            "at, else 100).",
        ),
        click.option(
            "--no-fusion",
            is_flag=True,
            help="Ignore the reranker card's learned fusion (use its interpolation weight, if any).",
        ),
    ]

    @functools.wraps(func)
    def with_settings(*args: Any, **kwargs: Any) -> Any:
        kwargs["settings"] = _SearcherSettings(**{name: kwargs.pop(name) for name in _SEARCHER_FIELDS})
        return func(*args, **kwargs)

    return _with_options(with_settings, options)


@dataclass(frozen=True)
class _SearcherSettings:
    """The searcher options shared by `search` and `run`, gathered into one value."""

    mode: str
    fusion: str
    depth: int
    alpha: float
    rrf_k: int
    device: str | None
    rerank_model: str | None
    rerank_depth: int | None
    no_fusion: bool

    def rerank_config(self) -> Any:
        """RerankConfig(MODEL, device=..., depth=...): only what was given overrides RerankConfig's defaults."""
        from searchkit.config import RerankConfig

        if self.rerank_model is None:
            return None
        given: dict[str, Any] = {"device": self.device, "depth": self.rerank_depth}
        settings = {name: value for name, value in given.items() if value is not None}
        return RerankConfig(self.rerank_model, fusion=None if self.no_fusion else "auto", **settings)

    def fusion_config(self) -> Any:
        """FusionConfig(method=..., depth=..., alpha=..., rrf_k=...)"""
        from searchkit.config import FusionConfig

        return FusionConfig(method=self.fusion, depth=self.depth, alpha=self.alpha, rrf_k=self.rrf_k)

    def spec(self, directory: Path, filters: Sequence[str] = ()) -> Any:
        """SearcherSpec(directory, mode=..., fusion=FusionConfig(...), rerank=RerankConfig(...), filters=...)"""
        from searchkit.distributed import SearcherSpec

        return SearcherSpec(
            str(directory), self.mode, self.fusion_config(), self.rerank_config(), self.device, tuple(filters)
        )

    def build(self, directory: Path) -> Any:
        """Searcher(Index.open(directory), mode=..., fusion=FusionConfig(...), rerank=RerankConfig(...))"""
        return self.spec(directory)()


_SEARCHER_FIELDS = [field.name for field in fields(_SearcherSettings)]


def _filter_option(func: Any) -> Any:
    """``--filter EXPR`` (repeatable; search and run): see searchkit.filters for the grammar."""
    return click.option(
        "--filter",
        "filters",
        multiple=True,
        metavar="EXPR",
        help="Only documents whose metadata meet EXPR: FIELD OP VALUE (OP =, !=, <, <=, >, >=) or FIELD in V1,V2; "
        "repeat for several (all must hold), e.g. --filter 'year>=2020' --filter 'lang=en'.",
    )(func)


@cli.command("search")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("query")
@click.option("-k", default=10, show_default=True, help="Number of hits.")
@_searcher_options
@_filter_option
@click.option("--explain", is_flag=True, help="Show each hit's rank and score in every stage.")
@click.option("--json", "as_json", is_flag=True)
def search_command(
    directory: Path,
    query: str,
    k: int,
    settings: _SearcherSettings,
    filters: tuple[str, ...],
    explain: bool,
    as_json: bool,
) -> None:
    """Search an index for QUERY.  Python: Searcher(Index.open(directory)).search(query, k, filter=[...])

    With --rerank MODEL: Searcher(index, rerank=RerankConfig(MODEL, depth=...)).search(query, k); a reranker whose
    card holds a learned fusion (see `searchkit fit-fusion`) combines every stage's scores with it.
    """
    searcher = settings.build(directory)
    if explain:
        explained = searcher.explain(query, k, filter=list(filters))
        if as_json:
            _echo_json(
                [
                    {
                        "doc_id": hit.doc_id,
                        "score": hit.score,
                        "stages": {name: stage._asdict() for name, stage in hit.stages.items()},
                    }
                    for hit in explained
                ]
            )
            return
        for rank, hit in enumerate(explained, start=1):
            stages = "  ".join(
                f"{name}: " + ("-" if stage.rank is None else f"#{stage.rank} ({stage.score:.4f})")
                for name, stage in hit.stages.items()
            )
            click.echo(f"{rank:>3}  {hit.doc_id:<20} {hit.score:10.4f}  {stages}")
        return
    hits = searcher.search(query, k, filter=list(filters))
    docs = searcher.index.documents([hit.doc_id for hit in hits])
    if as_json:
        _echo_json(
            [
                {"rank": rank, "doc_id": hit.doc_id, "score": hit.score, "title": doc.title, "text": doc.text}
                for rank, (hit, doc) in enumerate(zip(hits, docs, strict=True), start=1)
            ]
        )
        return
    if not hits:
        click.echo("no results")
    for rank, (hit, doc) in enumerate(zip(hits, docs, strict=True), start=1):
        snippet = (doc.title + " — " if doc.title else "") + doc.text
        click.echo(f"{rank:>3}  {hit.doc_id:<20} {hit.score:10.4f}  {snippet[:100]}")


@cli.command("run")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("queries")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="TREC run file.")
@click.option("-k", default=100, show_default=True, help="Hits per query.")
@click.option(
    "--split",
    default=None,
    help="With a BEIR folder: the queries of this qrels split (all of them when the split judges most).",
)
@_searcher_options
@_filter_option
@click.option("--batch-size", default=256, show_default=True)
@click.option("--tag", default="searchkit", show_default=True, help="Run tag (TREC column 6).")
@click.option("--exclude-self", is_flag=True, help="Drop a query's own id from its results.")
@_ray_options
@click.pass_context
def run_command(
    ctx: click.Context,
    directory: Path,
    queries: str,
    output: Path,
    k: int,
    split: str | None,
    settings: _SearcherSettings,
    filters: tuple[str, ...],
    batch_size: int,
    tag: str,
    exclude_self: bool,
    ray_address: str | None,
    ray_actors: int | None,
) -> None:
    """Run QUERIES (BEIR folder, .jsonl/.tsv file or irds:<id>) against an index; write a TREC run.

    With --ray the query batches are searched by Ray actors that each open the index and the reranker once; the
    run written is the same. Python: write_run(run_queries(searcher, read_queries(queries), k), output), or
    run_queries_on_ray(open_searcher, queries, k, RayConfig()) (searchkit.distributed).
    """
    from searchkit.evaluate import run_queries
    from searchkit.formats import write_run
    from searchkit.suite import select_queries

    chosen = select_queries(queries, split)
    ray = _ray_config(ray_address, ray_actors)
    options = {"batch_size": batch_size, "show_progress": ctx.obj["progress"], "exclude_self": exclude_self}
    if ray is not None:
        from searchkit.distributed import run_queries_on_ray
        from searchkit.models import resolve_device

        on_gpus = resolve_device(settings.device or "auto", "run") != "cpu"
        run = run_queries_on_ray(settings.spec(directory, filters), chosen, k, ray, use_gpus=on_gpus, **options)
    else:
        run = run_queries(settings.spec(directory, filters)(), chosen, k, **options)
    write_run(run, output, tag=tag)
    click.echo(f"wrote {output}: {len(run)} queries, {sum(len(hits) for hits in run.values())} hits")


@cli.command("serve")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_searcher_options
@click.option("--host", default=ServeConfig.host, show_default=True, help="Interface to listen on (loopback).")
@click.option("--port", default=ServeConfig.port, show_default=True, type=int)
@click.option("--workers", default=ServeConfig.workers, show_default=True, type=int, help="Server processes.")
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    default=None,
    help=f"Bearer token required on every API route and always on admin routes (or set {TOKEN_ENV}).",
)
@click.option("--max-batch", default=ServeConfig.max_batch, show_default=True, help="Queries per batched call.")
@click.option(
    "--batch-wait-ms", default=ServeConfig.batch_wait_ms, show_default=True, help="Longest wait to fill a batch."
)
def serve_command(
    directory: Path,
    settings: _SearcherSettings,
    host: str,
    port: int,
    workers: int,
    token: str | None,
    max_batch: int,
    batch_wait_ms: float,
) -> None:
    """Serve an index over HTTP: POST /search, /search/batch, /explain; GET /health, /metrics; a search page at /;
    POST /admin/reload (or SIGHUP) re-opens the index after a rebuild. API docs at /docs.

    Needs `pip install 'searchkit[serve]'`. Python: searchkit.serve.serve(EngineSpec(directory, ...), ServeConfig(...))
    """
    from searchkit.serve import serve
    from searchkit.serve.engine import EngineSpec

    spec = EngineSpec(
        str(directory),
        mode=settings.mode,
        fusion=settings.fusion_config(),
        rerank=settings.rerank_config(),
        device=settings.device,
    )
    config = ServeConfig(host=host, port=port, workers=workers, max_batch=max_batch, batch_wait_ms=batch_wait_ms)
    serve(spec, config, token=token)


@cli.command("score")
@click.argument("qrels")
@click.argument("run_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-m", "--metric", "metrics", multiple=True, help="ir-measures name (repeatable). Default: standard set.")
@click.option("--split", default="test", show_default=True, help="Qrels split when QRELS is a BEIR folder.")
@click.option("--queries", default=None, help="Full query set: unjudged queries count as 0 (see --unjudged).")
@click.option("--unjudged", default="zero", show_default=True, type=click.Choice(["zero", "skip"]))
@click.option("--per-query", is_flag=True, help="Also print each query's values.")
@click.option("--json", "as_json", is_flag=True)
def score_command(
    qrels: str,
    run_file: Path,
    metrics: Sequence[str],
    split: str,
    queries: str | None,
    unjudged: str,
    per_query: bool,
    as_json: bool,
) -> None:
    """Score a TREC RUN_FILE against QRELS.  Python: evaluate(read_run(run), read_qrels(qrels), metrics)"""
    from searchkit.evaluate import DEFAULT_METRICS, evaluate, evaluation_to_dict, format_table
    from searchkit.formats import read_qrels, read_queries, read_run

    chosen = tuple(metrics) or DEFAULT_METRICS
    query_ids = [query.query_id for query in read_queries(queries)] if queries else None
    result = evaluate(read_run(run_file), read_qrels(qrels, split), chosen, query_ids=query_ids, unjudged=unjudged)
    if as_json:
        _echo_json(evaluation_to_dict(result, per_query=per_query))
        return
    if per_query:
        for query_id, values in result.per_query.items():
            click.echo(query_id + "\t" + "\t".join(f"{name}={value:.4f}" for name, value in values.items()))
    click.echo(format_table([(str(run_file), result.aggregate)], chosen))
    for line in result.report.lines():
        click.echo(line)


@cli.command("eval")
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--check", is_flag=True, help="Exit 1 when a metric leaves its expected tolerance.")
@click.option("--only", multiple=True, help="Run only these conditions (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Results JSON path.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def eval_command(
    ctx: click.Context, suite: Path, check: bool, only: Sequence[str], output: Path | None, as_json: bool
) -> None:
    """Run an evaluation SUITE (eval/*.toml) and compare with its expected scores.

    Python: run_suite(load_suite(suite), check=True)
    """
    from searchkit.suite import load_suite, run_suite

    result = run_suite(
        load_suite(suite),
        check=check,
        show_progress=ctx.obj["progress"],
        only=list(only) or None,
        output=output,
    )
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(result.format())
    if check and not result.passed:
        sys.exit(1)


# ---------------------------------------------------------------------- train
@cli.command("train")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace the output folder (its first-stage cache is kept).")
@click.option("--max-steps", type=int, default=None, help="Stop after N optimizer steps (smoke runs).")
@click.option("--limit-queries", type=int, default=None, help="Use only N queries, dev included (smoke runs).")
@click.option("--device", default=None, help="Override the recipe's device: auto, cpu or cuda.")
@click.option(
    "--init-from",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Start from this already fine-tuned model folder (continual fine-tuning; lineage recorded).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the TrainResult as JSON.")
@click.pass_context
def train_command(
    ctx: click.Context,
    recipe: Path,
    resume: bool,
    overwrite: bool,
    max_steps: int | None,
    limit_queries: int | None,
    device: str | None,
    init_from: Path | None,
    as_json: bool,
) -> None:
    """Fine-tune a model as RECIPE.toml (training/*.toml) says: a cross-encoder reranker (the output folder is a
    model for --rerank), or with `model = "dense"` in the recipe the bi-encoder (a sentence-transformers folder
    for `index add DIR --dense FOLDER`).

    Python: train(dataclasses.replace(load_train_recipe(recipe), resume=..., max_steps=...)), or for a dense
    recipe train_dense(dataclasses.replace(load_dense_train_recipe(recipe), init_from=...))
    """
    import dataclasses

    from searchkit.config import TrainConfig, load_dense_train_recipe, load_recipe, load_train_recipe
    from searchkit.types import ConfigError

    # only what was given on the command line overrides the recipe
    given = {"max_steps": max_steps, "limit_queries": limit_queries, "device": device}
    changes: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    changes.update({name: True for name, flag in (("resume", resume), ("overwrite", overwrite)) if flag})
    if init_from is not None:
        changes["init_from"] = str(init_from)
    if load_recipe(recipe).get("model") == "dense":
        from searchkit.train_dense import train_dense

        dense = train_dense(dataclasses.replace(load_dense_train_recipe(recipe), **changes), ctx.obj["progress"])
        if as_json:
            _echo_json(dataclasses.asdict(dense))
        else:
            for line in dense.summary():
                click.echo(line)
        return
    from searchkit.train import train

    if "init_from" in changes and "init_from" not in {field.name for field in dataclasses.fields(TrainConfig)}:
        raise ConfigError(f"{recipe}: --init-from is not supported for reranker recipes yet")
    cfg = dataclasses.replace(load_train_recipe(recipe), **changes)
    result = train(cfg, show_progress=ctx.obj["progress"])
    if as_json:
        _echo_json(dataclasses.asdict(result))
        return
    for line in _train_summary(result, cfg.dev_metric):
        click.echo(line)


def _train_summary(result: Any, metric: str) -> list[str]:
    """A TrainResult in a few lines: where it went, which epoch won, dev scores per epoch, speed."""
    took = f"{result.seconds:.1f} s" if result.seconds < 120 else f"{result.seconds / 60:.1f} min"
    lines = [
        f"output       {result.output}",
        f"data         {result.train_queries} train queries, {result.dev_queries} dev queries, "
        f"{result.train_pairs} pairs at {result.pairs_per_second:.1f} pairs/s, {took}",
    ]
    if result.interrupted:
        lines.append(f"stopped      after epoch {result.epochs_run} (checkpoint kept): continue with --resume")
    else:
        early = " (stopped early)" if result.stopped_early else ""
        lines.append(f"epochs       {result.epochs_run} run{early}; best epoch {result.best_epoch} (0: starting model)")
    evaluated = [entry for entry in result.dev if "dev" in entry]
    if not evaluated:
        lines.append("dev          none (no dev queries): the last epoch is kept unchecked")
        return lines
    first = evaluated[0]["dev"]
    if "first_stage" in first:
        lines.append(f"first stage  dev {metric} {first['first_stage']:.4f}")
    lines.append(f"dev {metric} by epoch (* shipped):")
    lines.append(f"{'epoch':>5}  {'loss':>8}  {'reranker':>8}  {'interpolated':>12}  {'a':>4}")
    for entry in evaluated:
        dev, loss = entry["dev"], entry.get("loss")
        mixed = f"{dev['interpolated']:12.4f}  {dev['a']:>4g}" if "interpolated" in dev else f"{'-':>12}  {'-':>4}"
        marker = "  *" if entry["epoch"] == result.best_epoch else ""
        loss_text = "-" if loss is None else f"{loss:.4f}"
        lines.append(f"{entry['epoch']:>5}  {loss_text:>8}  {dev['reranker']:8.4f}  {mixed}{marker}")
    if not result.interrupted:
        weight = "none (reranker scores only)" if result.interpolation is None else f"a = {result.interpolation}"
        lines.append(f"shipped      epoch {result.best_epoch}, interpolation {weight} (dev {metric})")
        fusion = getattr(result, "fusion", None)
        if fusion:
            lines.append(_fusion_line(fusion, metric))
    return lines


def _fusion_line(fusion: dict[str, Any], metric: str) -> str:
    weights = ", ".join(f"{name} {weight:.3f}" for name, weight in fusion["weights"].items())
    fitted = fusion.get("fitted") or {}
    score = f"; dev {metric} {fitted['fused']:.4f}" if "fused" in fitted else ""
    return f"fusion       {weights} (fitted at depth {fusion.get('depth')}, mode {fusion.get('mode')}{score})"


@cli.command("fit-fusion")
@click.argument("model", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--depth",
    default=None,
    help="Rerank depth it will be used at (default: RerankConfig's), or several, e.g. 20,30,50: the smallest whose "
    "fused dev score is within 0.002 of the best is chosen.",
)
@click.option("--mode", default="auto", show_default=True, help="First stage: auto, bm25, dense, hybrid or cascade.")
@click.option(
    "--dev-queries",
    "dev_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="File of dev query ids, one a line (default: MODEL/data/dev_queries.txt).",
)
@click.option("--metric", default="nDCG@10", show_default=True, help="Dev metric the weights maximise.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True, help="auto, fp32, fp16 or bf16.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def fit_fusion_command(
    ctx: click.Context,
    model: Path,
    directory: Path,
    depth: str | None,
    mode: str,
    dev_file: Path | None,
    metric: str,
    device: str,
    dtype: str,
    as_json: bool,
) -> None:
    """Fit the learned fusion of every stage for a trained reranker MODEL on its dev queries, over the index
    DIRECTORY, and store it in MODEL/searchkit.json (used from then on by --rerank MODEL and suites).

    Dev queries, their texts and qrels come from the training run (its data/dev_queries.txt and the card's training
    split); the test split is never read. Python: searchkit.fusion.fit_fusion(MODEL, DIRECTORY, depth=..., mode=...)
    """
    from searchkit.config import config_to_dict
    from searchkit.fusion import fit_fusion

    dev_ids = None
    if dev_file is not None:
        dev_ids = [line.strip() for line in dev_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        depths = [int(part) for part in depth.split(",")] if depth else None
    except ValueError:
        raise click.BadParameter(f"{depth!r}: give a depth or a comma-separated list, e.g. 20,30,50") from None
    fitted, report = fit_fusion(
        model,
        directory,
        dev_ids=dev_ids,
        depth=depths,
        mode=mode,
        metric=metric,
        device=device,
        dtype=dtype,
        show_progress=ctx.obj["progress"],
    )
    if as_json:
        _echo_json(config_to_dict(fitted))
        return
    name = report["metric"]
    click.echo(f"dev          {report['queries']} queries, {name}, depth {fitted.depth}, mode {fitted.mode}")
    for stage, value in report["alone"].items():
        click.echo(f"  {stage:<12} alone {value:.4f}")
    a = report["interpolation"]
    click.echo(f"  interpolated (a = {a['a']}) {a['score']:.4f}")
    click.echo(f"  fused        {report['fused']:.4f}")
    for each, row in report.get("depths", {}).items():
        mark = "  <- chosen" if int(each) == fitted.depth else ""
        click.echo(
            f"  depth {each:>4}   first-stage recall {row['first_stage_recall']:.4f}   reranker alone "
            f"{row['reranker_alone']:.4f}   fused {row['fused']:.4f}{mark}"
        )
    click.echo(_fusion_line(config_to_dict(fitted), name))
    click.echo(f"written to   {model / 'searchkit.json'}")


# ---------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: SearchkitError and bad-file errors become one line on stderr and exit code 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="searchkit", standalone_mode=False)
    except click.exceptions.Exit as stop:
        sys.exit(stop.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code if err.exit_code != 1 else 2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        if debug:
            raise
        click.echo("interrupted", err=True)
        sys.exit(130)
    except (SearchkitError, OSError) as err:
        if debug:
            raise
        click.echo(f"error: {err}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
