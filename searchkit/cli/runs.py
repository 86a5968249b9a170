"""``searchkit fuse`` (run files fused as the Searcher fuses its stages) and ``searchkit rerank`` (any TREC run's
candidates re-scored by a cross-encoder, with the texts from an index's doc store)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from searchkit.cli.options import echo_json
from searchkit.config import FusionConfig, RerankConfig
from searchkit.evaluate.metrics import DEFAULT_METRICS
from searchkit.evaluate.rerank_report import run_rerank_evaluation
from searchkit.evaluate.tables import format_table
from searchkit.formats import read_corpus, read_qrels, read_queries, read_run, write_run
from searchkit.index import Index
from searchkit.ranking.fusion import FUSE_METHODS, NORMS, fuse_runs
from searchkit.search import Searcher


def parse_weights(text: str | None) -> list[float] | None:
    """``"0.3,0.7"`` -> ``[0.3, 0.7]`` (None stays None); a value that is not a number is a usage error."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint="--weights") from None


@click.command("fuse", short_help="Fuse TREC run files (RRF, convex, CombSUM, CombMNZ).")
@click.argument("runs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="TREC run file.")
@click.option("--method", default="rrf", show_default=True, type=click.Choice(FUSE_METHODS))
@click.option(
    "--weights",
    default=None,
    metavar="W1,W2,...",
    help="Convex fusion: one weight per run, in the order given (default: equal weights summing to 1; two runs "
    "BM25,DENSE with 1-a,a are the Searcher's convex hybrid with --alpha a).",
)
@click.option("--rrf-k", default=FusionConfig.rrf_k, show_default=True, help="RRF constant.")
@click.option(
    "--norm",
    default="minmax",
    show_default=True,
    type=click.Choice(NORMS),
    help="Per-query score normalisation for convex, combsum and combmnz (constant scores: 1.0 under minmax).",
)
@click.option("-k", default=1000, show_default=True, help="Hits per query written.")
@click.option("--tag", default="searchkit-fuse", show_default=True, help="Run tag (TREC column 6).")
def fuse_command(
    runs: Sequence[Path],
    output: Path,
    method: str,
    weights: str | None,
    rrf_k: int,
    norm: str,
    k: int,
    tag: str,
) -> None:
    """Fuse RUNS (TREC run files) per query with the arithmetic the Searcher's hybrid uses.

    Ranks are each run's score order (ties by doc id, descending, as trec_eval); a query missing from a run gets
    nothing from it. Python: write_run(fuse_runs([read_run(r) for r in runs], method, weights=...), output)
    """
    fused = fuse_runs([read_run(path) for path in runs], method, weights=parse_weights(weights), rrf_k=rrf_k, norm=norm)
    write_run({query_id: hits[:k] for query_id, hits in fused.items()}, output, tag=tag)
    click.echo(f"wrote {output}: {len(fused)} queries fused from {len(runs)} runs ({method})")


@click.command("rerank", short_help="Rerank any TREC run's candidates with a cross-encoder.")
@click.argument("directory", metavar="INDEX", type=click.Path(file_okay=False, path_type=Path))
@click.argument("run_file", metavar="RUN", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="TREC run file.")
@click.option(
    "--queries",
    required=True,
    help="The run's query texts: a BEIR folder, a .jsonl/.tsv file or irds:<id>.",
)
@click.option(
    "--model",
    required=True,
    metavar="FOLDER",
    help="Cross-encoder: a `searchkit train` output folder or a model name.",
)
@click.option(
    "--depth",
    type=int,
    default=None,
    help="Candidates re-scored per query (default: the depth the card's fusion was fitted at, else 100).",
)
@click.option(
    "--corpus",
    default=None,
    help="Read the candidates' texts from this corpus instead of INDEX's doc store.",
)
@click.option("--device", default=None, help="auto, cpu or cuda.")
@click.option("--no-fusion", is_flag=True, help="Ignore the card's learned fusion (use its interpolation, if any).")
@click.option("--batch-size", default=256, show_default=True, help="Queries per reranking batch.")
@click.option("--qrels", default=None, help="Score the input and the reranked run against these qrels.")
@click.option("--split", default="test", show_default=True, help="Qrels split when --qrels is a BEIR folder.")
@click.option("-m", "--metric", "metrics", multiple=True, help="Metric for the report (repeatable).")
@click.option("--tag", default="searchkit-rerank", show_default=True, help="Run tag (TREC column 6).")
@click.option("--json", "as_json", is_flag=True, help="The report (or, without --qrels, what was written) as JSON.")
def rerank_command(
    directory: Path,
    run_file: Path,
    output: Path,
    queries: str,
    model: str,
    depth: int | None,
    corpus: str | None,
    device: str | None,
    no_fusion: bool,
    batch_size: int,
    qrels: str | None,
    split: str,
    metrics: Sequence[str],
    tag: str,
    as_json: bool,
) -> None:
    """Rerank RUN (a TREC run file of any system) with a cross-encoder; texts from INDEX's doc store.

    The same reranker, batching and card fusion as `searchkit run --rerank`. With --qrels, the report gives the
    input run's recall at the rerank depth (what the reranker was given) beside both runs' scores.

    Python: Searcher(Index.open(index), rerank=RerankConfig(model, depth=...)).rerank_run(query_texts, read_run(run))
    """
    given: dict[str, Any] = {"device": device, "depth": depth}
    config = RerankConfig(model, fusion=None if no_fusion else "auto", **{k: v for k, v in given.items() if v})
    searcher = Searcher(Index.open(directory), rerank=config)
    first_stage = read_run(run_file)
    texts = {query.query_id: query.text for query in read_queries(queries)}
    documents = None
    if corpus is not None:
        wanted = {hit.doc_id for hits in first_stage.values() for hit in hits[: searcher.rerank_depth]}
        documents = {doc.doc_id: doc for doc in read_corpus(corpus) if doc.doc_id in wanted}
    reranked = searcher.rerank_run(texts, first_stage, documents=documents, batch_size=batch_size)
    write_run(reranked, output, tag=tag)
    message = f"wrote {output}: {len(reranked)} queries, top {searcher.rerank_depth} reranked"
    if qrels is None:
        if as_json:
            echo_json({"output": str(output), "depth": searcher.rerank_depth, "queries": len(reranked)})
        else:
            click.echo(message)
        return
    chosen = tuple(metrics) or DEFAULT_METRICS
    report = run_rerank_evaluation(first_stage, reranked, searcher.rerank_depth, read_qrels(qrels, split), chosen)
    if as_json:
        echo_json(
            {"output": str(output), "depth": report.depth, "input": report.first_stage, "reranked": report.reranker}
        )
        return
    click.echo(message)
    columns = list(report.reranker)
    click.echo(format_table([(f"input {run_file.name}", report.first_stage), ("reranked", report.reranker)], columns))
