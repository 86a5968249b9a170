"""``searchkit search`` (one query, with ``--explain``) and ``searchkit run`` (a query set to a TREC run file)."""

from __future__ import annotations

from pathlib import Path

import click

from searchkit.cli.options import SearcherSettings, echo_json, filter_option, ray_config, ray_options, searcher_options
from searchkit.distributed.queries import run_queries_on_ray
from searchkit.evaluate.runs import run_queries
from searchkit.formats import read_queries, write_run
from searchkit.models.device import resolve_device


@click.command("search", short_help="Search an index for one query.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("query")
@click.option("-k", default=10, show_default=True, help="Number of hits.")
@searcher_options
@filter_option
@click.option("--explain", is_flag=True, help="Show each hit's rank and score in every stage.")
@click.option("--json", "as_json", is_flag=True)
def search_command(
    directory: Path,
    query: str,
    k: int,
    settings: SearcherSettings,
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
            echo_json(
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
        echo_json(
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


@click.command("run", short_help="Search a query set and write a TREC run file.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("queries")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="TREC run file.")
@click.option("-k", default=100, show_default=True, help="Hits per query.")
@click.option(
    "--split",
    default=None,
    help="With a BEIR folder: only the queries judged in qrels/SPLIT.tsv (as read_queries(QUERIES, split=SPLIT)).",
)
@searcher_options
@filter_option
@click.option("--batch-size", default=256, show_default=True)
@click.option("--tag", default="searchkit", show_default=True, help="Run tag (TREC column 6).")
@click.option("--exclude-self", is_flag=True, help="Drop a query's own id from its results.")
@ray_options
@click.pass_context
def run_command(
    ctx: click.Context,
    directory: Path,
    queries: str,
    output: Path,
    k: int,
    split: str | None,
    settings: SearcherSettings,
    filters: tuple[str, ...],
    batch_size: int,
    tag: str,
    exclude_self: bool,
    ray_address: str | None,
    ray_actors: int | None,
) -> None:
    """Run QUERIES (BEIR folder, .jsonl/.tsv file or irds:<id>) against an index; write a TREC run.

    With --ray the query batches are searched by Ray actors that each open the index and the reranker once; the
    run written is the same. Python: write_run(run_queries(searcher, read_queries(queries, split=...), k), output), or
    run_queries_on_ray(open_searcher, queries, k, RayConfig()) (searchkit.distributed).
    """

    chosen = read_queries(queries, split=split)
    ray = ray_config(ray_address, ray_actors)
    options = {"batch_size": batch_size, "show_progress": ctx.obj["progress"], "exclude_self": exclude_self}
    if ray is not None:
        on_gpus = resolve_device(settings.device or "auto", "run") != "cpu"
        run = run_queries_on_ray(settings.spec(directory, filters), chosen, k, ray, use_gpus=on_gpus, **options)
    else:
        run = run_queries(settings.spec(directory, filters)(), chosen, k, **options)
    write_run(run, output, tag=tag)
    click.echo(f"wrote {output}: {len(run)} queries, {sum(len(hits) for hits in run.values())} hits")
