"""``searchkit index ...``: build, plan, add, update, compact, info, verify and analyze an index folder."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import click

from searchkit.cli.options import (
    bm25_config,
    echo_json,
    metadata_options,
    passages_option,
    ray_config,
    ray_options,
    tokens_config,
    tokens_options,
)
from searchkit.config import ANALYZERS, BM25Config, DenseConfig, FilterConfig, RayConfig, load_index_recipe
from searchkit.distributed.encoding import RayEncoding
from searchkit.formats import read_ids
from searchkit.index import Index
from searchkit.index.components import retrieving
from searchkit.index.plan import free_disk, plan_build
from searchkit.index.update import check_deletable, read_update_corpus
from searchkit.models.hub import is_hub_ref
from searchkit.types import ConfigError


# ---------------------------------------------------------------------- index
def ray_encoding(config: RayConfig | None) -> RayEncoding | None:
    """The Ray encoding backend when ``--ray`` was given (a one-line error naming the extra without Ray)."""
    return None if config is None else RayEncoding(config)


DENSE_PASSAGES_HELP = (
    "Split documents into passages of TOKENS tokens every STRIDE tokens for the dense component and score a "
    "document by its best passage (max, the default) or its first; without it documents are cut to the model's "
    "length (the build logs how many)."
)


@click.group(short_help="Build, inspect, update and verify index folders.")
def index() -> None:
    """Build, inspect and verify index folders."""


@index.command("build")
@click.argument("recipe", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--corpus", help="BEIR folder, .jsonl/.tsv corpus file, or irds:<ir-datasets id>.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Index folder to create.")
@click.option("--dense", "dense_model", help="Also build a dense component with this model (e.g. all-MiniLM-L6-v2).")
@click.option("--no-bm25", is_flag=True, help="Skip the BM25 component (dense only).")
@passages_option(DENSE_PASSAGES_HELP)
@tokens_options
@click.option(
    "--bm25-method", default=BM25Config.method, show_default=True, help="lucene, robertson, atire, bm25l, bm25+."
)
@click.option("--k1", default=BM25Config.k1, show_default=True, type=float)
@click.option("--b", "b", default=BM25Config.b, show_default=True, type=float)
@click.option("--stemmer", default="english", show_default=True, help="PyStemmer language, or 'none'.")
@click.option("--stopwords", default="en", show_default=True, help="bm25s stopword list name, or 'none'.")
@click.option(
    "--analyzer",
    "analyzers",
    multiple=True,
    type=click.Choice(ANALYZERS),
    help="BM25 analyzer (default en); repeat it for BM25 over several analyzers, each a first stage (the first is "
    "the bm25 component, the others bm25.<analyzer>): --analyzer zh --analyzer cjk-bigram.",
)
@click.option(
    "--min-token-length",
    type=click.IntRange(1, 2),
    default=BM25Config.min_token_length,
    show_default=True,
    help="1 keeps single letters and digits as terms ('vitamin C', 'X-ray', '5'); 2 drops them (bm25s's splitter).",
)
@click.option(
    "--faiss", "faiss_factory", default=DenseConfig.faiss_factory, show_default=True, help="FAISS index factory string."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda for encoding and FAISS.")
@click.option("--id-field", default="_id", show_default=True)
@click.option("--title-field", default="title", show_default=True)
@click.option("--text-field", default="text", show_default=True)
@metadata_options
@ray_options
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
    passages: Any,
    tokens_model: str | None,
    tokens_max_length: int | None,
    bm25_method: str,
    k1: float,
    b: float,
    stemmer: str,
    stopwords: str,
    analyzers: tuple[str, ...],
    min_token_length: int,
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

    if passages is not None and (recipe is not None or not dense_model):
        raise ConfigError("--passages needs --dense MODEL (a recipe sets them in its [dense.passages] table)")
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
            "bm25": None
            if no_bm25
            else [
                bm25_config(bm25_method, k1, b, stemmer, stopwords, analyzer, min_token_length)
                for analyzer in analyzers or [BM25Config.analyzer]
            ],
            "dense": DenseConfig(model=dense_model, faiss_factory=faiss_factory, device=device, passages=passages)
            if dense_model
            else None,
            "tokens": tokens_config(tokens_model, tokens_max_length),
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
        encoding=ray_encoding(ray_config(ray_address, ray_actors)),
        force=force,
        **spec["fields"],
    )
    summary = built.info()
    if as_json:
        echo_json(summary)
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
@tokens_options
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

    Python: plan_build(corpus, bm25=..., dense=DenseConfig(...), sample=N, scale_to=N)  (searchkit.index.plan)
    """

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
            "tokens": tokens_config(tokens_model, tokens_max_length),
        }
        fields = {"id_field": id_field, "title_field": title_field, "text_field": text_field}
    plan = plan_build(source, **components, **fields, sample=sample, scale_to=scale_to, measure=not no_measure)
    where, free = free_disk(target)
    if as_json:
        echo_json({**plan.to_dict(), "output": str(target), "free_disk": free})
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
@passages_option(DENSE_PASSAGES_HELP)
@tokens_options
@ray_options
@click.option("--overwrite", is_flag=True, help="Replace the component if the index has one.")
@click.pass_context
def index_add(
    ctx: click.Context,
    directory: Path,
    dense_model: str | None,
    faiss_factory: str,
    device: str,
    add_bm25: bool,
    passages: Any,
    tokens_model: str | None,
    tokens_max_length: int | None,
    ray_address: str | None,
    ray_actors: int | None,
    overwrite: bool,
) -> None:
    """Add a component to an existing index without rebuilding the others.

    Python: Index.open(directory).add(dense=DenseConfig(model=...), tokens=TokensConfig(model=...))
    """

    if passages is not None and not dense_model:
        raise ConfigError("--passages needs --dense MODEL")
    dense = (
        DenseConfig(model=dense_model, faiss_factory=faiss_factory, device=device, passages=passages)
        if dense_model
        else None
    )
    updated = Index.open(directory).add(
        bm25=BM25Config() if add_bm25 else None,
        dense=dense,
        tokens=tokens_config(tokens_model, tokens_max_length),
        overwrite=overwrite,
        show_progress=ctx.obj["progress"],
        encoding=ray_encoding(ray_config(ray_address, ray_actors)),
    )
    click.echo(f"{updated.path}: components now {', '.join(updated.manifest['components'])}")


@index.command("info")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def index_info(directory: Path, as_json: bool) -> None:
    """Show what an index holds and how it was built.  Python: Index.open(directory).info()"""

    summary = Index.open(directory).info()
    if as_json:
        echo_json(summary)
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
@click.argument("directory")
def index_verify(directory: str) -> None:
    """Check every checksum and invariant; exit 1 on any problem.  Python: Index.open(directory, verify=True)

    DIRECTORY may be hf://owner/name[@revision]: the index is downloaded (or read from the Hugging Face cache)
    and verified.
    """

    opened = Index.open(directory if is_hub_ref(directory) else Path(directory), verify=True)
    click.echo(f"{opened.path}: ok ({opened.num_docs} documents, {len(opened.manifest['files'])} files verified)")


@index.command("push")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("repo")
@click.option("--private", is_flag=True, default=None, help="Create the repository private.")
@click.option("--revision", help="Branch to push to (default: the repository's main branch).")
def index_push(directory: Path, repo: str, private: bool | None, revision: str | None) -> None:
    """Upload an index folder to a Hugging Face Hub repository (owner/name, hf://owner/name or
    hf://datasets/owner/name; created when missing), verified first: the manifest and the files it lists.  Python:
    Index.open(directory).push(repo)

    The token is huggingface_hub's (HF_TOKEN, or `hf auth login`). Open it back with
    Index.open("hf://owner/name"), `searchkit index verify hf://owner/name`.
    """

    url = Index.open(directory).push(repo, private=private, revision=revision)
    click.echo(f"{directory}: pushed to {repo} ({url})")


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
        echo_json(summary)
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
@click.option(
    "--component", "components", multiple=True, help="BM25 component (bm25, bm25.<analyzer>); default: every one."
)
@click.option("--json", "as_json", is_flag=True)
def index_analyze(directory: Path, text: str, components: tuple[str, ...], as_json: bool) -> None:
    """Show the terms each BM25 analyzer of the index makes of TEXT (what a query is matched on).

    Python: Index.open(directory).component("bm25").analyze(text)
    """

    index = Index.open(directory)
    names = list(components) or [name for name in retrieving(index.manifest["components"]) if name != "dense"]
    if not names:
        raise ConfigError(f"{directory} has no BM25 component: nothing analyzes text there")
    found = {}
    for name in names:
        retriever = index.component(name)
        found[name] = {
            "analyzer": retriever.config.analyzer,
            "terms": retriever.analyze(text),
            "unknown": retriever.unknown_terms(text),
        }
    if as_json:
        echo_json(found if len(found) > 1 or components else found[names[0]]["terms"])
        return
    for name, seen in found.items():
        terms = seen["terms"]
        label = f"{name} ({seen['analyzer']}): " if len(found) > 1 else ""
        click.echo(label + (" ".join(terms) if terms else "(no terms: every word is a stopword or empty)"))
        if seen["unknown"]:
            click.echo(f"not in the index (ignored at query time): {' '.join(seen['unknown'])}")
